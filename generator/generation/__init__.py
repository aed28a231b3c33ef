"""Samplers and the decode loop, composing music from seeds, rendering to audio and images."""
