"""The portable CPU mode's flags, the CPU description results record, and the fingerprints."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import cpu_mode, fingerprint


def test_portable_flags_are_appended_once_and_only_when_asked(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.delenv(cpu_mode.PORTABLE_ENV, raising=False)
    cpu_mode.apply_portable_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert not cpu_mode.portable_cpu()
    monkeypatch.setenv(cpu_mode.PORTABLE_ENV, "1")
    cpu_mode.apply_portable_flags()
    cpu_mode.apply_portable_flags()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"  # the user's flags are kept
    assert all(flags.count(flag) == 1 for flag in cpu_mode.PORTABLE_XLA_FLAGS)
    assert cpu_mode.portable_cpu() and cpu_mode.describe()["portable"] is True
    monkeypatch.setenv(cpu_mode.PORTABLE_ENV, "0")
    assert not cpu_mode.portable_requested()


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ("sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16", "AVX512_BF16"),
        ("sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni", "AVX512_VNNI"),
        ("sse4_2 avx avx2 fma avx512f avx512bw avx512vl", "AVX512"),
        ("sse4_2 avx avx2 fma", "AVX2"),
        ("sse4_2 avx avx2", "AVX"),  # AVX2 without FMA is not XLA's AVX2 level
        ("sse4_2", "SSE4_2"),
    ],
)
def test_isa_level_is_read_from_the_cpu_flags(monkeypatch, flags, level):
    info = {"model name": "Test CPU", "cpu family": "25", "model": "1", "flags": flags}
    monkeypatch.setattr(cpu_mode, "_cpuinfo", lambda: info)
    assert cpu_mode.cpu_isa_level() == level
    assert cpu_mode.cpu_model() == "Test CPU (family 25, model 1)"


def test_state_hash_sees_every_bit_and_only_the_bits():
    tree = {"a": jnp.arange(4, dtype=jnp.float32), "b": {"key": jax.random.key(3)}}
    same = {"a": jnp.arange(4, dtype=jnp.float32), "b": {"key": jax.random.key(3)}}
    assert fingerprint.state_hash(tree) == fingerprint.state_hash(same)
    flipped = np.arange(4, dtype=np.float32)
    flipped.view(np.uint32)[2] ^= 1  # the last bit of one number
    assert fingerprint.state_hash({**tree, "a": jnp.asarray(flipped)}) != fingerprint.state_hash(
        tree
    )
    other_key = {**tree, "b": {"key": jax.random.key(4)}}
    assert fingerprint.state_hash(other_key) != fingerprint.state_hash(tree)
    assert len(fingerprint.state_hash(tree)) == fingerprint.HASH_CHARS


def test_a_family_run_is_a_pure_function_of_its_steps():
    first = fingerprint.run_family("seed_mlp", steps=2)
    assert fingerprint.run_family("seed_mlp", steps=2) == first
    assert fingerprint.run_family("seed_mlp", steps=3) != first


@pytest.mark.slow
def test_command_prints_both_modes_from_fresh_processes():
    """Both modes in fresh processes: the portable one under the portable flags, the default
    one under none of them, even when the parent runs in portable mode."""
    env = {**os.environ, cpu_mode.PORTABLE_ENV: "1"}  # the parent's mode must not leak
    # Two families (seconds to compile); --record insists on all four (a minute and more).
    out = subprocess.run(
        [sys.executable, "-m", "gan_jax.fingerprint", "--steps", "2"]
        + ["--families", "seed_mlp,pacgan_mlp"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["mode", "seed_mlp", "pacgan_mlp"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert set(rows) == {"default", "portable"}
    assert all(len(h) == fingerprint.HASH_CHARS for hashes in rows.values() for h in hashes)
    record = fingerprint.fingerprint(steps=2, families=("seed_mlp",))
    assert record["isa"] == cpu_mode.cpu_isa_level() and record["steps"] == 2
    assert set(record["modes"]) == {"default", "portable"}
    for flag in cpu_mode.PORTABLE_XLA_FLAGS:
        assert flag in record["modes"]["portable"]["xla_flags"].split()
        assert flag not in record["modes"]["default"]["xla_flags"].split()
    # The same run in a fresh process gives the hash the command printed.
    assert record["modes"]["default"]["seed_mlp"] == rows["default"][0]


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        fingerprint.main(["--modes", "fast"])
    assert exit_info.value.code == 2 and "--modes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fingerprint.main(["--steps", "0"])
    with pytest.raises(SystemExit):
        fingerprint.main(["--families", "vae"])
    with pytest.raises(SystemExit):
        fingerprint.main(["--families", "seed_mlp", "--record", "x.jsonl"])
