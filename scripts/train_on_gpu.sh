#!/usr/bin/env bash
# Retrain the shipped models (tiny-ldm VAE + UNet, the HiDDeN pair, the SSL backbone) in one
# go on one GPU, the three recipes side by side, each from wmkit/train/. Logs and one tar of
# each result land in OUTDIR; weights/README.md records what a run produced and how it was used.
#
#   scripts/train_on_gpu.sh OUTDIR [MINUTES] [DEVICE] [PHOTOS]
#
# MINUTES: wall time of each of the hidden and SSL recipes (tiny-ldm splits it: 45% VAE,
# 55% UNet, which trains on the new VAE's latents). PHOTOS: the training photo folder
# (default: the calibration group of wmkit.data, copied out by
# `python -m wmkit.data copy DIR --group calibration`), so the GPU machine needs no scikit-image;
# or a packed corpus set (`python -m wmkit.data corpus pack CORPUS DIR`, at most 60 MiB).
set -u
OUTDIR=${1:?usage: scripts/train_on_gpu.sh OUTDIR [MINUTES] [DEVICE] [PHOTOS]}
MINUTES=${2:-6.5}
DEVICE=${3:-cuda}
PHOTOS=${4:-.gpudata/photos}
THREADS=${THREADS:-4}
WORK=${WORK:-/tmp/wmkit-train}
mkdir -p "$OUTDIR"
rm -rf "$WORK" && mkdir -p "$WORK/tiny-ldm"
# the tokenizer and the seeded random text encoder are what `tiny_ldm text` makes: reuse the shipped ones
cp -r weights/tiny-ldm/tokenizer weights/tiny-ldm/text_encoder "$WORK/tiny-ldm/"
VAE_MIN=$(python3 -c "print(round($MINUTES * 0.45, 2))")
UNET_MIN=$(python3 -c "print(round($MINUTES * 0.55 - 0.5, 2))")  # less the latents' precomputation
python3 -c "import torch, diffusers, kornia, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'kornia', kornia.__version__, 'transformers', transformers.__version__, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', flush=True)" || exit 1
start=$(date +%s)
(
  python3 -m wmkit.train.tiny_ldm vae --device "$DEVICE" --threads "$THREADS" --minutes "$VAE_MIN" --batch 32 --crop 128 \
      --pool 2000 --images "$PHOTOS" --out "$WORK/tiny-ldm" &&
  python3 -m wmkit.train.tiny_ldm unet --device "$DEVICE" --threads "$THREADS" --minutes "$UNET_MIN" --batch 128 \
      --pool 4000 --images "$PHOTOS" --out "$WORK/tiny-ldm" &&
  python3 -m wmkit.train.tiny_ldm finish --out "$WORK/tiny-ldm"
) > "$OUTDIR/tiny-ldm.log" 2>&1 &
python3 -m wmkit.train.hidden --device "$DEVICE" --threads "$THREADS" --minutes "$MINUTES" --batch 64 --count 6000 \
    --images-dir "$PHOTOS" --out "$WORK/hidden" --log-every 500 > "$OUTDIR/hidden.log" 2>&1 &
python3 -m wmkit.train.ssl_backbone --device "$DEVICE" --threads "$THREADS" --minutes "$MINUTES" --batch 128 --count 3000 \
    --markability 25 --images-dir "$PHOTOS" --out "$WORK/ssl-backbone" > "$OUTDIR/ssl.log" 2>&1 &
wait
echo "all recipes ended after $(( $(date +%s) - start )) s"
for name in tiny-ldm hidden ssl-backbone; do
  [ -d "$WORK/$name" ] && tar -C "$WORK" -cf "$OUTDIR/$name.tar" "$name"
done
ls -la "$OUTDIR"
