"""Small networks wmkit trains and ships, and loaders for real checkpoints."""


def weights_digest(modules: dict) -> str:
    """12 hex digits of sha256 over the weights of ``modules`` ({name prefix: module}, in
    the given order; each module's tensors by sorted name): tells retrained weights behind
    the same name apart (e.g. for caches of what was made against them)."""
    import hashlib

    h = hashlib.sha256()
    for prefix, module in modules.items():
        for name, tensor in sorted(module.state_dict().items()):
            h.update(f"{prefix}{name}".encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]
