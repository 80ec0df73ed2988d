"""Train the shipped SSL backbone (weights/ssl-backbone/) on offline photos.

    python -m wmkit.train.ssl_backbone --minutes 22 [--out weights/ssl-backbone] [--images-dir DIR]

Self-supervised objective: VICReg (invariance + variance + covariance, on the
backbone's own 256-d output) between two views of each image, the views drawn
with wmkit's own attacks (random crop, resize, differentiable JPEG, blur, noise,
brightness/contrast/saturation, rotation): the transformations the marks must
survive. (`--objective simclr`: NT-Xent with a projector, the first recipe.)

Plus a *markability* term (weight `--markability`, 0 turns it off). A small
backbone trained for invariance alone becomes smooth: a perturbation at 42 dB
moves its whitened feature by a fraction of the natural spread, so no mark can be
placed (measured: cosine +0.1 to +0.2 after 60 marking steps, p ~ 0.1). The term
takes one gradient step of a 42 dB perturbation towards a random feature direction
r, puts the perturbed and the plain view through the same random attack, and
rewards how far the feature moved along r, in units of its spread over the batch
(capped at 4). It trains exactly what marking needs: directions a small change
can move and an attack does not undo; the variance term keeps the units honest.

The shipped backbone came from two runs (weights/README.md): blurred strides first, then
``--standardize --init FIRST/checkpoint.pt`` (the same weights behind a front end that
standardises each image's brightness and contrast). Runs checkpoint every 5 minutes; ``--resume``
continues one.

Then PCA whitening is fitted on features of other crops and saved with the
backbone (safetensors, fp16).

Data: crops of a training corpus (--corpus; python -m wmkit.data corpus build), of any folder
of images (--images-dir), or of the *calibration* photo group (wmkit.data). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .. import data
from ..data.sampler import data_provenance, load_sources
from ..attacks import parse_attack
from . import load_checkpoint, save_checkpoint, training_device
from ..models.backbone import TinyBackbone, WhitenedBackbone, save_whitened

VIEW_ATTACKS = ["random_crop@{s}", "gaussian_blur@{s}", "jpeg_diff@{s}", "gaussian_noise@{s}", "brightness@{s}",
                "contrast@{s}", "saturation@{s}", "rotate@{s}", "resize@{s}"]


def _at_random_strength(template: str, generator: torch.Generator):
    """The attack ``template`` ("name@{s}") at a strength drawn uniformly from [0.1, 0.9]."""
    strength = float(torch.rand(1, generator=generator)) * 0.8 + 0.1
    return parse_attack(template.format(s=round(strength, 3)))


def _view(batch: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Two or three random attacks at random strengths, then back to a fixed size."""
    out = batch
    count = int(torch.randint(2, 4, (1,), generator=generator))
    for index in torch.randperm(len(VIEW_ATTACKS), generator=generator)[:count].tolist():
        out = _at_random_strength(VIEW_ATTACKS[index], generator)(out, generator=generator)
    if torch.rand(1, generator=generator) < 0.5:
        out = out.flip(-1)
    return F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, targets)


def vicreg(z1: torch.Tensor, z2: torch.Tensor, *, invariance: float = 25.0, variance: float = 25.0,
           covariance: float = 1.0) -> torch.Tensor:
    """VICReg (Bardes et al., 2022) on the backbone's own output: views agree (MSE), every
    feature keeps a standard deviation of at least 1 over the batch, features decorrelate.
    The variance and covariance terms keep the feature full-rank, which the marks need:
    the hypercone test's power grows with the dimension of the whitened feature."""
    loss = invariance * F.mse_loss(z1, z2)
    for z in (z1, z2):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        cov = (z.T @ z) / (z.shape[0] - 1)
        off_diagonal = cov - torch.diag(torch.diag(cov))
        loss = loss + variance * F.relu(1 - std).mean() / 2 + covariance * off_diagonal.pow(2).sum() / z.shape[1] / 2
    return loss


# whitening crops by size: marks are read at any size, so the null is fitted across sizes
WHITENING_SIZES = {128: 0.5, 256: 0.3, 384: 0.2}
MARKABILITY_ATTACKS = ["identity", "random_crop@{s}", "resize@{s}", "jpeg_diff@{s}", "gaussian_blur@{s}", "brightness@{s}",
                       "contrast@{s}", "rotate@{s}"]


def markability(model: torch.nn.Module, views: torch.Tensor, generator: torch.Generator, *, psnr: float = 42.0,
                cap: float = 4.0) -> torch.Tensor:
    """Minus the mean distance (in batch standard deviations) that a one-step perturbation
    at ``psnr`` dB moves the feature along a random direction, through a random attack."""
    x = views.detach().requires_grad_(True)
    directions = F.normalize(torch.randn(x.shape[0], model.config["out_dim"], generator=generator), dim=1).to(x.device)
    with torch.enable_grad():
        grad, = torch.autograd.grad((model(x) * directions).sum(), x)
    delta = grad / grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12) * 10 ** (-psnr / 20)
    attack = _at_random_strength(MARKABILITY_ATTACKS[int(torch.randint(len(MARKABILITY_ATTACKS), (1,), generator=generator))],
                                 generator)
    with torch.no_grad():
        params = attack.sample_params(x, generator)  # the same attack on both: replayed parameters
        pair = torch.cat([attack.apply((x + delta).clamp(0, 1), params), attack.apply(x.detach(), params)])
    features = model(pair)
    marked, plain = features.chunk(2)
    moved = ((marked - plain) / (plain.std(0, keepdim=True).detach() + 1e-3) * directions).sum(1)
    return -moved.clamp(max=cap).mean()


def training_photos(images_dir: Optional[str], corpus: Optional[str] = None) -> list[torch.Tensor]:
    """The photos crops are cut from: a corpus (its train split or a packed set), a folder's images,
    or the calibration group."""
    if corpus is not None:
        return [p.float() / 255 for p in load_sources(corpus)]
    if images_dir:
        from ..imageio import iter_image_paths, load_image

        return [load_image(p) for p in iter_image_paths([images_dir])]
    return data.load_photos("calibration")


def load_training_images(count: int, size: int, seed: int, photos: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(data.crops(count, size=size, seed=seed, photos=photos))


def train(*, out: Path, minutes: Optional[float], steps: Optional[int], width: int = 32, dim: int = 256,
          batch: int = 32, size: int = 96, count: int = 600, seed: int = 0, images_dir: Optional[str] = None,
          objective: str = "vicreg", markability_weight: float = 10.0, fit_count: int = 1200,
          device: str = "cpu", corpus: Optional[str] = None, antialias: bool = True, standardize: bool = False,
          resume: bool = False, init: Optional[Path] = None, checkpoint_every: float = 300.0) -> dict:
    """Train, checkpointing to ``out/checkpoint.pt`` every ``checkpoint_every`` seconds; ``resume``
    continues from it (``minutes`` is then this run's budget, ``steps`` the total). ``init``: start
    from the weights of another run's checkpoint whose architecture differs only in parameter-free
    modules (``standardize``); the optimiser starts afresh and the step count from zero."""
    dev = training_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    photos = training_photos(images_dir, corpus)
    images = load_training_images(count, 128, seed, photos).to(dev)
    model = TinyBackbone(width=width, out_dim=dim, antialias=antialias, standardize=standardize).to(dev)
    projector = torch.nn.Sequential(torch.nn.Linear(dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64)).to(dev)
    params = list(model.parameters()) + list(projector.parameters())
    optimiser = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    step, losses, moves, seconds_before, initialised_from = 0, [], [], 0.0, None
    checkpoint = Path(out) / "checkpoint.pt"
    if resume:
        state = load_checkpoint(checkpoint)
        if state["config"] != model.config:
            raise SystemExit(f"--resume: {checkpoint} is of another architecture ({state['config']} != {model.config})")
        model.load_state_dict(state["model"])
        projector.load_state_dict(state["projector"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step, losses, moves, seconds_before = state["step"], state["losses"], state["moves"], state["seconds"]
        initialised_from = state.get("initialised_from")
        print(f"resumed at step {step} ({seconds_before:.0f} s trained)", flush=True)
    elif init is not None:
        initialised_from = _initialise(model, projector, Path(init))
    start = last_save = time.perf_counter()

    def save() -> None:
        save_checkpoint(checkpoint, {"config": model.config, "model": model.state_dict(), "projector": projector.state_dict(),
                                     "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "step": step,
                                     "losses": losses, "moves": moves, "initialised_from": initialised_from,
                                     "seconds": seconds_before + time.perf_counter() - start})

    budget = minutes * 60 if minutes is not None else float("inf")
    total = steps if steps is not None else 10**9
    model.train()
    while step < total and time.perf_counter() - start < budget:
        index = torch.randint(len(images), (batch,), generator=generator).to(dev)
        x = images[index]
        with torch.no_grad():
            v1, v2 = _view(x, generator, size), _view(x, generator, size)
        if objective == "vicreg":
            loss = vicreg(model(v1), model(v2))
        else:
            loss = nt_xent(projector(model(v1)), projector(model(v2)))
        moved = torch.zeros(())
        if markability_weight > 0:
            moved = markability(model, v1, generator)
            loss = loss + markability_weight * moved
        moves.append(-moved.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step}  loss {sum(losses[-50:]) / 50:.3f}  moved {sum(moves[-50:]) / 50:.2f} sd  "
                  f"{seconds_before + time.perf_counter() - start:.0f} s", flush=True)
        if time.perf_counter() - last_save > checkpoint_every:
            save()
            last_save = time.perf_counter()
    save()
    whitened = fit_whitening(model.cpu(), fit_count=fit_count, seed=seed + 1, photos=photos, device=dev)
    provenance = {"steps": step, "seconds": round(seconds_before + time.perf_counter() - start), "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
                  "batch": batch, "view_size": size, "train_images": count, "data": data_provenance(corpus, images_dir),
                  "objective": objective, "markability_weight": markability_weight,
                  "markability_moved_sd": round(sum(moves[-50:]) / max(1, len(moves[-50:])), 3),
                  "whitening": f"{fit_count} crops at sizes {WHITENING_SIZES}", "recipe": "python -m wmkit.train.ssl_backbone",
                  "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                  **({"initialised_from": initialised_from} if initialised_from else {})}
    save_whitened(whitened.half(), out, provenance=provenance)
    return provenance


def _initialise(model: TinyBackbone, projector: torch.nn.Module, checkpoint: Path) -> dict:
    """Load another run's weights into ``model`` and ``projector``; returns what provenance records of
    that run. Only parameter-free modules (the input normalisation) may differ."""
    state = load_checkpoint(checkpoint)
    weights = {k: v for k, v in state["model"].items() if not k.startswith("normalize.")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        projector.load_state_dict(state["projector"])
    except RuntimeError as exc:  # a shape differs
        raise SystemExit(f"--init: {checkpoint} does not fit this architecture ({str(exc).splitlines()[-1].strip()})") from None
    missing = [k for k in missing if not k.startswith("normalize.")]
    if missing or unexpected:
        raise SystemExit(f"--init: {checkpoint} does not fit this architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
    print(f"initialised from {checkpoint} (step {state['step']}, {state['seconds']:.0f} s trained)", flush=True)
    return {"config": state["config"], "steps": state["step"], "seconds": round(state["seconds"]),
            **({"initialised_from": state["initialised_from"]} if state.get("initialised_from") else {})}


def fit_whitening(model: TinyBackbone, *, fit_count: int, seed: int, photos: list[torch.Tensor],
                  device: torch.device = torch.device("cpu")) -> WhitenedBackbone:
    """PCA whitening fitted on ``fit_count`` crops (other crops than training's) at several sizes;
    the features are computed on ``device``, the returned model is on the CPU."""
    model.eval().half().float()  # the shipped file is fp16: fit the whitening to the weights that ship
    model.to(device)
    features = []
    with torch.no_grad():
        for size, share in WHITENING_SIZES.items():
            images = load_training_images(max(1, round(fit_count * share)), size, seed + size, photos)
            features += [model(images[i:i + 25].to(device)).cpu() for i in range(0, len(images), 25)]
    model.cpu()
    whitened = WhitenedBackbone(model, model.config["out_dim"])
    whitened.fit_whitening(torch.cat(features))
    return whitened


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--images-dir", default=None)
    parser.add_argument("--corpus", default=None, help="train on a corpus folder or packed set (python -m wmkit.data corpus)")
    parser.add_argument("--objective", choices=["vicreg", "simclr"], default="vicreg")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=96, help="view size in pixels")
    parser.add_argument("--markability", type=float, default=10.0, help="weight of the markability term (0: off)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--count", type=int, default=600, help="number of training crops (128 px)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the weights are saved from a CPU copy)")
    parser.add_argument("--no-antialias", dest="antialias", action="store_false",
                        help="plain stride-2 convolutions (the architecture of the backbone shipped before 2026-12-01)")
    parser.add_argument("--standardize", action="store_true",
                        help="standardise each image's brightness and contrast before the network (models.backbone.Standardize)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (saved every 5 minutes)")
    parser.add_argument("--init", default=None, help="start from another run's checkpoint.pt (fine-tuning)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ..paths import weights_dir

    out = Path(args.out) if args.out else weights_dir() / "ssl-backbone"
    print(json.dumps(train(out=out, minutes=args.minutes, steps=args.steps, width=args.width, images_dir=args.images_dir,
                           objective=args.objective, batch=args.batch, size=args.size, markability_weight=args.markability,
                           count=args.count, device=args.device, corpus=args.corpus, antialias=args.antialias,
                           standardize=args.standardize, resume=args.resume, init=args.init)))


if __name__ == "__main__":
    main()
