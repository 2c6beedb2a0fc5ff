#!/usr/bin/env bash
# Build the virtual environment the speech fixtures are made in (tools/ref_speech.py):
#
#     tools/tortoise_env.sh [VENV]          # default /work/venv-ref; kept outside the repository
#     VENV/bin/python tools/make_reference.py speech
#
# It uses transformers 4.31.0, the version tortoise-tts 3.0.0 pins (its setup.py: transformers==4.31.0), and not
# the transformers 5 the other parts need (pyproject's [reference] extra). Under transformers 5:
#   - GPT2PreTrainedModel no longer inherits GenerationMixin, so UnifiedVoice.inference_speech fails with
#     "'GPT2InferenceModel' object has no attribute 'generate'";
#   - tortoise/models/stream_generator.py (tts_stream's generator) imports BeamSearchScorer, PhrasalConstraint,
#     ConstrainedBeamSearchScorer and generation.utils.SampleOutput, which transformers 5 removed.
# The other parts need transformers 5 (ClvpModelForConditionalGeneration, added in 4.35), so they do not run here.
#
# Python 3.11 (the torch wheel is cp311). Every package is pinned, the transitive ones too.
set -euo pipefail

VENV=${1:-/work/venv-ref}
TORCH=${TORCH:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}  # or torch==2.13.0 from the CPU index

python3 -m venv "$VENV"
"$VENV/bin/pip" install --no-deps "$TORCH"
"$VENV/bin/pip" install --no-deps \
    filelock==4.3.2 fsspec==2026.9.0 Jinja2==3.1.6 MarkupSafe==3.0.4 mpmath==1.3.0 networkx==3.6.1 sympy==1.14.0 \
    typing_extensions==4.16.0 setuptools==84.2.1 \
    numpy==2.4.6 \
    transformers==4.31.0 tokenizers==0.13.3 huggingface_hub==0.36.2 safetensors==0.8.0 hf-xet==1.8.0 \
    regex==2026.11.19 PyYAML==6.0.4 packaging==26.4 requests==2.34.2 certifi==2026.10.19.post1 \
    charset-normalizer==3.5.3 idna==3.20 urllib3==2.8.0 tqdm==4.70.1 \
    inflect==7.6.0 more-itertools==11.2.1 typeguard==4.6.1 jaraco.functools==4.6.0 Unidecode==1.4.0 \
    einops==0.8.2 rotary-embedding-torch==0.9.1 scipy==1.17.1 progressbar==2.5
"$VENV/bin/pip" check
