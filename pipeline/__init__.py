"""The ComfyUI glue of LSD: VAE and sampler calls, conditioning, canvas noise, regions and their batches.

Nodes call this layer; it calls `kernels/` (pure tensor math) and ComfyUI; nothing here imports a node.
"""
