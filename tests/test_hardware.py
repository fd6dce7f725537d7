"""Catalogue, profiles and roofline (docs/model.md §2), checked on hand-computed figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fleetopt_milp.errors import CatalogError, FleetOptError
from fleetopt_milp.hardware import (
    Profile,
    default_tp,
    load_catalog,
    models_dir,
    prefill_chunk_floor_ms,
    profile_warnings,
    resolve_profile,
    ridge_chunk_tokens,
    roofline_floor_ms,
    roofline_profile,
)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.fixture(scope="module")
def h100(cat):
    return cat.profile("paper-H100")


# --- catalogue contents -----------------------------------------------------------------


def test_builtin_catalogue_has_required_entries(cat):
    for g in ["A100-80GB", "H100-80GB", "H200-141GB", "B200-192GB", "L40S-48GB",
              "MI300X-192GB", "A10G-24GB"]:
        spec = cat.gpu(g)
        assert spec.usd_per_gpu_hour > 0 and spec.price_source
    for m in ["Llama-3-8B", "Llama-3-70B", "Qwen2.5-32B", "Mixtral-8x7B", "Llama-3.1-405B"]:
        assert cat.llm(m).source
    assert set(cat.profiles) >= {"paper-A100", "paper-H100", "paper-A10G"}
    assert models_dir().joinpath("gpus.toml").is_file()


def test_spec_sheet_figures(cat):
    h = cat.gpu("H100-80GB")
    assert (h.hbm_gb, h.hbm_bandwidth_gb_per_s, h.dense_fp16_tflops) == (80, 3350, 989)
    a = cat.gpu("A100-80GB")
    assert (a.hbm_bandwidth_gb_per_s, a.dense_fp16_tflops) == (2039, 312)
    m = cat.llm("Llama-3-70B")
    shape = (m.n_layers, m.hidden_size, m.n_heads, m.n_kv_heads, m.head_dim)
    assert shape == (80, 8192, 64, 8, 128)
    assert m.params_b == 70.6 and m.weight_bytes == pytest.approx(141.2e9)
    assert m.kv_bytes_per_token == 327_680  # 80 x 8 x 128 x 2 x 2
    assert cat.llm("Llama-3-8B").kv_bytes_per_token == 131_072
    mix = cat.llm("Mixtral-8x7B")
    assert mix.is_moe and mix.active_params_b == 12.9 and not m.is_moe


def test_lookup_is_case_insensitive_and_accepts_aliases(cat):
    assert cat.profile("PAPER-h100").name == "paper-H100"
    assert cat.gpu("h100").name == "H100-80GB"
    assert cat.gpu("h100-80gb").name == "H100-80GB"
    assert cat.llm("meta-llama/Meta-Llama-3-70B").name == "Llama-3-70B"


def test_paper_profiles_match_model_md(cat):
    a100, h100, a10g = (cat.profile(n) for n in ("paper-A100", "paper-H100", "paper-A10G"))
    assert (a100.w_ms, a100.h_ms, a100.chunk_tokens, a100.kv_blocks, a100.max_slots) == (
        8.0, 0.65, 512, 65536, 128)
    assert (h100.w_ms, h100.h_ms, h100.chunk_tokens, h100.kv_blocks, h100.max_slots) == (
        4.0, 0.32, 1024, 65536, 256)
    assert (a10g.w_ms, a10g.h_ms, a10g.chunk_tokens, a10g.kv_blocks, a10g.max_slots) == (
        12.0, 0.90, 256, 32768, 64)
    assert (a100.tp, h100.tp, a10g.tp) == (8, 8, 1)
    assert (a100.usd_per_gpu_hour, h100.usd_per_gpu_hour, a10g.usd_per_gpu_hour) == (
        2.21, 4.02, 1.01)
    assert all(p.source == "paper" and "2603.16514" in p.citation for p in (a100, h100, a10g))
    # This package prices an instance at tp x $/GPU-hour (the paper: one GPU's price).
    assert h100.usd_per_instance_hour == pytest.approx(32.16)
    assert h100.gpus_per_instance == 8
    assert a10g.usd_per_instance_hour == pytest.approx(1.01)


# --- slots ----------------------------------------------------------------------------


def test_slots_paper_h100(h100):
    assert h100.slots(65536) == 16
    assert h100.slots(8192) == 128
    assert h100.slots(4096) == 256
    # min(65536 // 96 = 682, 256 * 8192 // 1536 = 1365)
    assert h100.slots(1536) == 682
    assert h100.slots(1024) == 1024  # min(65536 // 64, 2048)
    assert h100.slots(4096.0) == 256
    assert h100.slots(np.int64(8192)) == 128


def test_slots_paper_a100(cat):
    a100 = cat.profile("paper-A100")
    assert a100.slots(8192) == 128  # min(65536 // 512, 128 * 8192 // 8192)
    assert a100.slots(65536) == 16
    assert a100.slots(4096) == 256  # min(65536 // 256 = 256, 128 * 2 = 256)


def test_max_context_and_slot_errors(h100):
    assert h100.max_context_tokens == 1_048_576  # 65536 blocks x 16 tokens
    assert h100.slots(1_048_576) == 1
    with pytest.raises(FleetOptError, match=r"context_tokens=1048577.*1048576"):
        h100.slots(1_048_577)
    for bad in (0, -5, 100.5, "8192", True):
        with pytest.raises(FleetOptError, match="context_tokens"):
            h100.slots(bad)


# --- timing ---------------------------------------------------------------------------


def test_iter_time(h100):
    assert h100.iter_time_s(1, 8192) == pytest.approx(4.32e-3)
    assert h100.iter_time_s(256, 4096) == pytest.approx((4.0 + 0.32 * 256 * 4096 / 8192) / 1e3)
    got = h100.iter_time_s(np.array([[1], [128]]), np.array([8192, 4096]))
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, [[4.32e-3, 4.16e-3], [(4 + 0.32 * 128) / 1e3,
                                                          (4 + 0.32 * 64) / 1e3]])


def test_prefill(h100):
    assert h100.prefill_s(800) == pytest.approx(4.32e-3)  # ceil(800 / 1024) = 1
    assert h100.prefill_s(1025) == pytest.approx(2 * 4.32e-3)
    np.testing.assert_allclose(h100.prefill_s(np.array([0, 1024, 1025, 8192])),
                               np.array([0, 1, 2, 8]) * 4.32e-3)
    with pytest.raises(FleetOptError, match="input_tokens"):
        h100.prefill_s(-1)


def test_service_time(h100, cat):
    # (ceil(800 / 1024) + 200) * (4.0 + 0.32 * 256 * 1000 / 8192) ms = 201 * 14 ms
    assert h100.service_s(800, 200, 4096) == pytest.approx(201 * 14.0e-3)
    lin = np.array([800, 3000, 60000])
    lout = np.array([200, 1000, 5536])
    got = h100.service_s(lin, lout, 65536)
    n = 16
    want = (np.ceil(lin / 1024) + lout) * (4.0 + 0.32 * n * (lin + lout) / 8192) / 1e3
    np.testing.assert_allclose(got, want)
    a100 = cat.profile("paper-A100")
    # (ceil(5000 / 512) = 10 + 1000) * (8 + 0.65 * 128 * 6000 / 8192) ms
    assert a100.service_s(5000, 1000, 8192) == pytest.approx(1010 * (8 + 0.65 * 128 * 6000 / 8192)
                                                              / 1e3)
    with pytest.raises(FleetOptError, match="output_tokens"):
        h100.service_s(10, -1, 4096)


def test_with_overrides(h100):
    cal = h100.with_overrides(w_ms=6.9, h_ms=0.13, kv_blocks=80000)
    assert cal.source == "calibrated"
    assert (cal.w_ms, cal.h_ms, cal.kv_blocks, cal.tp, cal.chunk_tokens) == (
        6.9, 0.13, 80000, 8, 1024)
    assert h100.w_ms == 4.0  # frozen original untouched
    with pytest.raises(FleetOptError, match="w_msec"):
        h100.with_overrides(w_msec=1.0)
    with pytest.raises(FleetOptError, match="source"):
        h100.with_overrides(source="paper")
    with pytest.raises(FleetOptError, match="kv_blocks"):
        h100.with_overrides(kv_blocks=0)
    with pytest.raises(FleetOptError, match="h_ms"):
        h100.with_overrides(h_ms=-0.1)


def test_profile_validation():
    kw = dict(name="x", gpu="g", model="m", tp=1, w_ms=1.0, h_ms=0.1, calib_tokens=8192,
              chunk_tokens=512, kv_blocks=100, block_tokens=16, max_slots=8,
              usd_per_gpu_hour=1.0, source="user")
    Profile(**kw)
    with pytest.raises(FleetOptError, match="source"):
        Profile(**{**kw, "source": "guess"})
    with pytest.raises(FleetOptError, match="tp"):
        Profile(**{**kw, "tp": 1.5})


# --- roofline -------------------------------------------------------------------------


def test_roofline_llama70b_8xh100(cat):
    gpu, m = cat.gpu("H100-80GB"), cat.llm("Llama-3-70B")
    p = roofline_profile(gpu, m, 8)
    # 141.2 GB / (8 x 3.35 TB/s x 0.8) = 6.59 ms, + 80 layers x 3 us = 6.83 ms
    assert 6.5 <= p.w_ms <= 6.9
    assert p.w_ms == pytest.approx(141.2e9 / (8 * 3350e9 * 0.8) * 1e3 + 0.24)
    # 327,680 B x 8192 / (8 x 3.35 TB/s x 0.8) = 0.125 ms
    assert 0.10 <= p.h_ms <= 0.14
    # (8 x 80 GB x 0.9 - 141.2 GB) / 327,680 B / 16 tokens
    assert p.kv_blocks == math.floor((576e9 - 141.2e9) / 327_680 / 16)
    assert p.source == "roofline" and p.tp == 8 and p.usd_per_gpu_hour == gpu.usd_per_gpu_hour
    assert p.chunk_tokens == ridge_chunk_tokens(gpu, m) == 288  # 989 / 3.35 = 295 -> 288
    assert p.slots(8192) == min(p.kv_blocks // 512, 256)
    w_floor, h_floor = roofline_floor_ms(p, gpu, m)
    assert w_floor == pytest.approx(5.27, abs=0.01)  # docs/model.md §2: W >= 5.2 ms
    assert h_floor == pytest.approx(0.100, abs=0.001)
    assert profile_warnings(p, cat) == []


def test_roofline_every_gpu_is_physical(cat):
    m = cat.llm("Llama-3-70B")
    for gpu in cat.gpus.values():
        p = roofline_profile(gpu, m, default_tp(gpu, m))
        assert profile_warnings(p, cat) == [], gpu.name
        assert p.slots(8192) >= 1


def test_roofline_moe_reads_all_weights(cat):
    gpu, mix = cat.gpu("H100-80GB"), cat.llm("Mixtral-8x7B")
    p = roofline_profile(gpu, mix, 2)
    assert p.w_ms == pytest.approx(93.4e9 / (2 * 3350e9 * 0.8) * 1e3 + 32 * 3e-3)
    # prefill compute uses active parameters: chunk = 295 x 46.7 / 12.9 -> 1056
    assert p.chunk_tokens == 16 * int(989 / 3.35 * 46.7 / 12.9 // 16)
    assert prefill_chunk_floor_ms(p, gpu, mix) <= p.w_ms


def test_default_tp(cat):
    m70, m8 = cat.llm("Llama-3-70B"), cat.llm("Llama-3-8B")
    assert default_tp(cat.gpu("H100-80GB"), m70) == 4  # 141.2 GB <= 0.8 x 4 x 80
    assert default_tp(cat.gpu("A10G-24GB"), m70) == 8
    assert default_tp(cat.gpu("B200-192GB"), m70) == 1
    assert default_tp(cat.gpu("A10G-24GB"), m8) == 1
    assert default_tp(cat.gpu("H100-80GB"), cat.llm("Llama-3.1-405B")) == 16
    with pytest.raises(FleetOptError, match="does not fit"):
        default_tp(cat.gpu("A10G-24GB"), cat.llm("Llama-3.1-405B").__class__(
            **{**cat.llm("Llama-3.1-405B").__dict__, "params_b": 9000.0,
               "active_params_b": 9000.0}))


def test_roofline_kv_heads_replicated_beyond_tp8(cat):
    gpu, m = cat.gpu("H100-80GB"), cat.llm("Llama-3.1-405B")
    p = roofline_profile(gpu, m, 16)
    assert m.kv_replication(16) == 2.0 and m.kv_replication(8) == 1.0
    kv = m.kv_bytes_per_token * 2
    assert p.kv_blocks == math.floor((16 * 80e9 * 0.9 - m.weight_bytes) / kv / 16)


def test_roofline_too_big_names_smallest_tp(cat):
    gpu = cat.gpu("H100-80GB")
    with pytest.raises(FleetOptError, match=r"Llama-3.1-405B.*tp=8 x H100-80GB.*smallest tp "
                                            r"that fits is 16"):
        roofline_profile(gpu, cat.llm("Llama-3.1-405B"), 8)
    with pytest.raises(FleetOptError, match="smallest tp that fits is 2"):
        roofline_profile(gpu, cat.llm("Llama-3-70B"), 1)
    with pytest.raises(FleetOptError, match="bandwidth_efficiency"):
        roofline_profile(gpu, cat.llm("Llama-3-70B"), 8, bandwidth_efficiency=1.5)


# --- warnings -------------------------------------------------------------------------


def test_paper_h100_is_below_its_floor(cat, h100):
    warns = profile_warnings(h100, cat)
    w = [x for x in warns if "weight-read floor" in x]
    assert len(w) == 1
    assert "paper-H100" in w[0] and "4.00 ms" in w[0] and "5.27 ms" in w[0]
    assert any("prefill chunk" in x for x in warns)  # 1024 tokens in 4.32 ms < 18.3 ms
    assert not any("H = " in x for x in warns)  # 0.32 ms is above the 0.100 ms floor
    assert not any("KV pool" in x for x in warns)  # 344 GB + 141 GB < 640 GB


def test_paper_a10g_kv_pool_exceeds_memory(cat):
    warns = profile_warnings(cat.profile("paper-A10G"), cat)
    assert any("KV pool" in x and "24 GB" in x for x in warns)


def test_warning_for_profile_outside_catalogue(cat, h100):
    odd = h100.with_overrides(gpu="TPU-v9", name="odd")
    (msg,) = profile_warnings(odd, cat)
    assert "TPU-v9" in msg and "odd" in msg


# --- resolve_profile ------------------------------------------------------------------


def test_resolve_named_profile(cat):
    assert resolve_profile(cat, "paper-H100").name == "paper-H100"
    assert resolve_profile(cat, "paper-h100", model="llama-3-70b", tp=8).name == "paper-H100"
    with pytest.raises(CatalogError, match="serves Llama-3-70B, not Llama-3-8B"):
        resolve_profile(cat, "paper-H100", model="Llama-3-8B")
    with pytest.raises(CatalogError, match="tp=8, not tp=4"):
        resolve_profile(cat, "paper-H100", tp=4)


def test_resolve_gpu_builds_roofline(cat):
    p = resolve_profile(cat, "H100", model="Llama-3-70B")
    assert p.source == "roofline" and p.tp == 4 and p.gpu == "H100-80GB"
    p8 = resolve_profile(cat, "H100-80GB", model="Llama-3-70B", tp=8)
    assert p8.tp == 8 and 6.5 <= p8.w_ms <= 6.9


def test_resolve_errors_list_known_names(cat):
    with pytest.raises(CatalogError, match=r"unknown GPU or profile 'V100'.*paper-H100.*H100-80GB"):
        resolve_profile(cat, "V100", model="Llama-3-70B")
    with pytest.raises(CatalogError, match=r"needs a model.*Llama-3-70B"):
        resolve_profile(cat, "H100-80GB")
    with pytest.raises(CatalogError, match=r"unknown model 'GPT-5'.*Mixtral-8x7B"):
        resolve_profile(cat, "H100-80GB", model="GPT-5")
    with pytest.raises(CatalogError, match=r"unknown profile 'nope'.*paper-A100"):
        cat.profile("nope")
    with pytest.raises(CatalogError, match=r"unknown GPU 'nope'.*A10G-24GB"):
        cat.gpu("nope")
    with pytest.raises(FleetOptError, match="smallest tp that fits is 16"):
        resolve_profile(cat, "H100-80GB", model="Llama-3.1-405B", tp=8)


# --- user TOML files ------------------------------------------------------------------

_USER_PROFILE = """
[profiles."my-h100"]
gpu = "H100-80GB"
model = "Llama-3-70B"
tp = 8
w_ms = 7.1
h_ms = 0.14
calib_tokens = 8192
chunk_tokens = 256
kv_blocks = 80000
block_tokens = 16
max_slots = 256
"""


def test_user_files_add_and_override(tmp_path: Path):
    (tmp_path / "prices.toml").write_text(
        '[gpus."h100-80gb"]\nhbm_gb = 80\nhbm_bandwidth_gb_per_s = 3350\n'
        'dense_fp16_tflops = 989\nusd_per_gpu_hour = 2.5\nprice_source = "our contract"\n')
    prof = tmp_path / "mine.toml"
    prof.write_text(_USER_PROFILE)
    cat = load_catalog([tmp_path / "prices.toml", prof])
    assert cat.gpu("H100").usd_per_gpu_hour == 2.5  # override keeps no stale duplicate
    assert sum(1 for g in cat.gpus if g.lower() == "h100-80gb") == 1
    mine = cat.profile("MY-H100")
    assert mine.source == "user" and mine.usd_per_gpu_hour == 2.5  # price taken from the GPU
    assert profile_warnings(mine, cat) == []
    # a directory works too, and so does a path given as the "gpu"
    assert load_catalog([tmp_path]).profile("my-h100").w_ms == 7.1
    p = resolve_profile(load_catalog(), str(prof), model="Llama-3-70B")
    assert p.name == "my-h100" and p.usd_per_gpu_hour == load_catalog().gpu("H100").usd_per_gpu_hour


def test_models_dir_env(tmp_path: Path, monkeypatch):
    priced = _USER_PROFILE.replace("tp = 8", "tp = 8\nusd_per_gpu_hour = 3.0")
    (tmp_path / "only.toml").write_text(priced)
    monkeypatch.setenv("FLEETOPT_MODELS_DIR", str(tmp_path))
    cat = load_catalog()
    assert list(cat.profiles) == ["my-h100"] and not cat.gpus
    assert profile_warnings(cat.profile("my-h100"), cat)[0].endswith("cannot be checked")
    monkeypatch.setenv("FLEETOPT_MODELS_DIR", str(tmp_path / "missing"))
    with pytest.raises(CatalogError, match="FLEETOPT_MODELS_DIR"):
        load_catalog()


_GOOD_GPU = {"hbm_gb": "80", "hbm_bandwidth_gb_per_s": "3350", "dense_fp16_tflops": "989",
             "usd_per_gpu_hour": "2.0", "price_source": '"x"'}


def _gpu_toml(**fields: str | None) -> str:
    body = {**_GOOD_GPU, **fields}
    return '[gpus."X1"]\n' + "".join(f"{k} = {v}\n" for k, v in body.items() if v is not None)


@pytest.mark.parametrize(
    "text, needle",
    [
        (_gpu_toml(hbm_gb="-80"), "hbm_gb' must be positive"),
        (_gpu_toml(hbm_gb="0"), "hbm_gb' must be positive"),
        (_gpu_toml(usd_per_gpu_hour=None), "missing field 'usd_per_gpu_hour'"),
        (_gpu_toml(hbm_gb='"80"'), "hbm_gb' must be a number"),
        (_gpu_toml(hbm_gbs="80"), "unknown field(s) hbm_gbs"),
        (_gpu_toml(price_source='""'), "price_source' must be a non-empty string"),
        (_USER_PROFILE.replace("tp = 8", "tp = 0"), "'tp' must be >= 1"),
        (_USER_PROFILE.replace("kv_blocks = 80000", "kv_blocks = 8.5"),
         "kv_blocks' must be an int"),
        (_USER_PROFILE.replace("w_ms = 7.1\n", ""), "missing field 'w_ms'"),
        (_USER_PROFILE.replace("gpu = \"H100-80GB\"", "gpu = \"TPU\""), "usd_per_gpu_hour"),
        (_USER_PROFILE + 'source = "vibes"\n', "source must be one of"),
        ('[gpu."X1"]\nhbm_gb = 1\n', "unknown table(s) gpu"),
        ("[gpus.X1\n", "not valid TOML"),
        ('[llms."M"]\nn_layers = 2\nhidden_size = 8\nn_heads = 2\nn_kv_heads = 2\nhead_dim = 4\n'
         'params_b = 1.0\nactive_params_b = 2.0\ndtype_bytes = 2\nmax_context_tokens = 10\n'
         'source = "s"\n', "active_params_b"),
    ],
)
def test_bad_toml_names_file_table_and_field(tmp_path: Path, text: str, needle: str):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog([bad])
    msg = str(info.value)
    assert needle in msg
    assert str(bad) in msg


def test_bad_toml_table_named(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(_gpu_toml(hbm_gb="-1"))
    with pytest.raises(CatalogError, match=r"\[gpus\.'X1'\].*hbm_gb"):
        load_catalog([bad])


def test_missing_extra_path(tmp_path: Path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog([tmp_path / "nope.toml"])


def test_partial_override_reprices_builtin_gpu(tmp_path: Path):
    f = tmp_path / "price.toml"
    f.write_text('[gpus."H100"]\nusd_per_gpu_hour = 2.0\nprice_source = "negotiated"\n')
    cat = load_catalog([f])
    h = cat.gpu("H100-80GB")
    assert (h.name, h.usd_per_gpu_hour, h.price_source, h.hbm_gb) == ("H100-80GB", 2.0,
                                                                       "negotiated", 80)
    assert resolve_profile(cat, "H100", model="Llama-3-70B", tp=8).usd_per_instance_hour == 16.0
