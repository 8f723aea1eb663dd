"""workflow/allocator.sh: TCMalloc under the study's processes changes speed, not numbers.

``make reproduce`` preloads the library the script prints. A training of the study's
model in an interpreter with it preloaded must give the same weights, to the bit, as one
on glibc's malloc, and the preload must really be in effect (the library mapped into the
process), else the comparison shows nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOCATOR = REPO / "workflow" / "allocator.sh"

TRAIN = """
import sys, torch
from training.model import GPT, GPTConfig, lm_loss
torch.set_num_threads(1)
torch.manual_seed(5)
model = GPT(GPTConfig(vocab_size=569, n_layer=2, n_head=2, n_embd=64, block_size=64))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
for _ in range(6):
    seq = torch.randint(0, 569, (64, 65))  # a batch-64 step: 9 MB of logits
    for part in seq.chunk(8):
        (lm_loss(model(part[:, :-1]), part[:, 1:]) / 8).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    lm_loss(model(seq[:, :-1]), seq[:, 1:]).backward()  # a one-pass step
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
torch.save(model.state_dict(), sys.argv[1])
maps = open("/proc/self/maps").read()
print("tcmalloc" if "libtcmalloc" in maps else "glibc")
"""


def allocator(**env: str) -> str:
    done = subprocess.run(
        ["bash", str(ALLOCATOR)], capture_output=True, text=True, env=os.environ | env, check=True
    )
    return done.stdout.strip()


def test_system_allocator_is_chosen_by_the_switch():
    assert allocator(PNE_ALLOCATOR="system") == ""


@pytest.mark.slow
def test_training_under_tcmalloc_equals_glibc_to_the_bit(tmp_path: Path):
    library = allocator()
    if not library:
        pytest.skip("no libtcmalloc_minimal.so.4 here and none could be installed")
    assert Path(library).is_file()
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    env = os.environ | {"PYTHONPATH": str(REPO)}
    env.pop("LD_PRELOAD", None)
    loaded = {}
    for name, preload in (("glibc", ""), ("tcmalloc", library)):
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / f"{name}.pt")],
            env=env | {"LD_PRELOAD": preload},
            capture_output=True,
            text=True,
            check=True,
        )
        loaded[name] = done.stdout.strip()
    assert loaded == {"glibc": "glibc", "tcmalloc": "tcmalloc"}
    import torch

    glibc = torch.load(tmp_path / "glibc.pt", weights_only=True)
    tcmalloc = torch.load(tmp_path / "tcmalloc.pt", weights_only=True)
    assert glibc.keys() == tcmalloc.keys()
    for name, tensor in glibc.items():
        assert torch.equal(tcmalloc[name], tensor), name
