"""The ComfyUI glue of LSD: VAE and sampler calls, conditioning, canvas noise, regions and their batches.

Nodes call this layer; it calls `kernels/` (pure tensor math) and ComfyUI; nothing here imports a node.

Where tensors live: the canvas, the scaffold, masks, blend weights and the composite on ComfyUI's intermediate device
(the CPU) in float32; ComfyUI moves a sampler call's noise, latent, mask and conditioning to the model's load device;
everything the pack hands the sampler or meets its `x` with is made on `x`'s device in `x`'s dtype: the per-step
noise each step (drawn on the CPU, the same values on every device), the fused tiles' shares once per run.
"""
