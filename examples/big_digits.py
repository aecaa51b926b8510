"""A data set at MNIST's size from scikit-learn's 8x8 digits, with no download: each image
upscaled to 28x28 (side x side) and jittered (shifted by up to side // 14 pixels, two at 28,
and noise added), so that it is learnable and no two rows are equal.

    python examples/big_digits.py digits.npz [--rows 60000] [--side 28]

writes a .npz of ``inputs`` (rows x side*side, float32 in [0, 1]) and ``targets`` (rows x 10
one-hot, float32), ready for ``POST /v1/datasets`` with ``Content-Type: application/x-npz``.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_digits


def big_digits(rows: int = 60_000, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    images = digits.images / 16.0  # 1797 x 8 x 8
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), rows)
    # nearest-neighbour upscaling to side x side
    scale = np.minimum((np.arange(side) * 8) // side, 7)
    upscaled = images[:, scale][:, :, scale].astype(np.float32)  # 1797 x side x side
    inputs = np.empty((rows, side * side), dtype=np.float32)
    block = 4096
    for start in range(0, rows, block):
        index = pick[start : start + block]
        batch = upscaled[index]
        most = side // 14
        shifts = rng.integers(-most, most + 1, (len(index), 2))
        for dy in range(-most, most + 1):
            for dx in range(-most, most + 1):
                chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                if chosen.any():
                    batch[chosen] = np.roll(batch[chosen], (dy, dx), axis=(1, 2))
        batch += rng.normal(0, 0.05, batch.shape).astype(np.float32)
        np.clip(batch, 0, 1, out=batch)
        inputs[start : start + len(index)] = batch.reshape(len(index), -1)
    targets = np.eye(10, dtype=np.float32)[digits.target[pick]]
    return inputs, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--side", type=int, default=28)
    args = parser.parse_args()
    inputs, targets = big_digits(args.rows, args.side)
    np.savez(args.path, inputs=inputs, targets=targets)
    print(f"{args.path}: inputs {inputs.shape} {inputs.dtype}, targets {targets.shape}")


if __name__ == "__main__":
    main()
