"""Write torch_saved_small.pt with ``torch.save`` and torch_saved_small.npz with the
arrays it holds (bfloat16 widened to float32), for the tests of
:mod:`sparsecode.io.torch_archive`.  Needs PyTorch; the tests do not.

Run from anywhere: ``python tests/data/make_torch_fixture.py``.
"""

from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main():
    torch.manual_seed(0)
    base = torch.arange(10, dtype=torch.float32)
    state = {
        "weight": torch.randn(3, 4),
        "bf16": torch.tensor([1.5, -2.25, 3.0e38, 1.0e-3], dtype=torch.bfloat16),
        "half": torch.tensor([0.5, -1.0, 65504.0], dtype=torch.float16),
        "transposed": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
        "step": torch.tensor(7, dtype=torch.int64),
        "slice": base[3:7],  # offset 3 into a storage of 10
        "linear": torch.nn.Linear(3, 2).state_dict(),
        "param": torch.nn.Parameter(torch.tensor([1.0, 2.0])),
    }
    torch.save(state, HERE / "torch_saved_small.pt")
    expected = {}
    for name, value in state.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, tensor in items:
            key = name if sub is None else f"{name}.{sub}"
            tensor = tensor.detach()
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            expected[key] = tensor.numpy()
    np.savez(HERE / "torch_saved_small.npz", **expected)


if __name__ == "__main__":
    main()
