"""File formats, read and written without torch. Read in this order:

  safetensors.py   the safetensors format: a pure-Python reader (memory-mapped) and writer
  torch_pickle.py  torch.save files (.bin / .pth): an allow-listed unpickler that runs nothing in the file
  checkpoints.py   a model folder: its weight files (single, sharded, or .bin), one shard-index reader
  wav.py           RIFF/WAVE files: read_wav
"""
