"""GPTConfig validation and the nano-head split rule, against a brute-force restatement of the rule."""

import pytest
from model_reference import ref_split

from trainables.model import GPTConfig, nanohead_split


def test_defaults():
    c = GPTConfig()
    assert (c.vocab_size, c.n_layer, c.n_embd, c.n_head, c.seq_len) == (4096, 4, 256, 4, 256)
    assert c.n_kv_head == 4  # None -> n_head
    assert (c.mlp_ratio, c.nanohead_proportion, c.nanohead_dim, c.softmax1) == (4.0, 0.0, 3, False)
    assert (c.mixer, c.toep_mean, c.toep_proj, c.tie_embeddings, c.dropout) == ("attention", False, False, False, 0.0)
    assert (c.attn_backend, c.qk_norm, c.rope_base, c.logit_softcap) == ("sdpa", True, 10000.0, 15.0)


def test_keyword_only():
    with pytest.raises(TypeError):
        GPTConfig(4096)  # noqa


BAD = [
    (dict(n_embd=100, n_head=3), r"n_embd|n_head"),
    (dict(n_embd=36, n_head=4), r"n_embd|n_head"),  # head dim 9 is odd: RoPE needs pairs
    (dict(nanohead_proportion=1.0), r"nanohead_proportion"),
    (dict(nanohead_proportion=-0.1), r"nanohead_proportion"),
    (dict(nanohead_proportion=1.5), r"nanohead_proportion"),
    (dict(nanohead_dim=0), r"nanohead_dim"),
    (dict(nanohead_dim=-2, nanohead_proportion=0.2), r"nanohead_dim"),
    (dict(n_head=4, n_kv_head=3), r"n_kv_head"),
    (dict(n_head=4, n_kv_head=8), r"n_kv_head"),
    (dict(mixer="mamba"), r"mixer"),
    (dict(attn_backend="xformers"), r"attn_backend"),
    # no valid nano split: n_embd=8, 4 heads, 3-wide nano heads leave < 2 per normal head
    (dict(n_embd=8, n_head=4, nanohead_proportion=0.5, nanohead_dim=3), r"nanohead_(proportion|dim)"),
    # odd n_embd with even nano dim can never be split into even normal heads
    (dict(n_embd=30, n_head=2, nanohead_proportion=0.3, nanohead_dim=4), r"nanohead_(proportion|dim)|n_embd|n_head"),
    (dict(vocab_size=0), r"vocab_size"),
    (dict(n_layer=0), r"n_layer"),
    (dict(seq_len=0), r"seq_len"),
    (dict(dropout=1.5), r"dropout"),
]


@pytest.mark.parametrize("kwargs,field", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_config_raises_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)


def test_flash_backend_accepted_at_construction():
    assert GPTConfig(attn_backend="flash").attn_backend == "flash"


def test_contract_example():
    s = nanohead_split(GPTConfig(n_embd=256, n_head=4, nanohead_dim=3, nanohead_proportion=0.2))
    assert (s.n_normal, s.normal_dim, s.n_nano, s.nano_dim) == (4, 52, 16, 3)
    assert (s.n_kv_normal, s.n_kv_nano) == (4, 16)


def test_split_tie_goes_to_smaller():
    # valid k are multiples of 8 (256 - 3k divisible by 8); p*256/3 = 12 sits exactly between 8 and 16
    s = nanohead_split(GPTConfig(n_embd=256, n_head=4, nanohead_dim=3, nanohead_proportion=0.140625))
    assert s.n_nano == 8 and s.normal_dim == (256 - 24) // 4


def test_split_p0_is_plain():
    s = nanohead_split(GPTConfig(n_embd=96, n_head=6, n_kv_head=2))
    assert (s.n_normal, s.normal_dim, s.n_nano, s.n_kv_normal, s.n_kv_nano) == (6, 16, 0, 2, 0)


def _grid():
    for n_embd, n_head in [
        (64, 4),
        (96, 6),
        (96, 4),
        (128, 8),
        (192, 3),
        (256, 4),
        (384, 6),
        (768, 12),
        (48, 2),
        (40, 4),
    ]:
        for g in (1, 2, 3, 4):
            if n_head % g:
                continue
            for p in (0.0, 0.05, 0.1, 0.2, 0.25, 0.4, 0.6, 0.8, 0.95):
                for nd in (1, 2, 3, 4, 5):
                    yield n_embd, n_head, n_head // g, p, nd


def test_split_matches_brute_force_over_a_grid():
    checked = rejected = 0
    for n_embd, n_head, n_kv, p, nd in _grid():
        want = ref_split(n_embd, n_head, n_kv, p, nd)
        kw = dict(n_embd=n_embd, n_head=n_head, n_kv_head=n_kv, nanohead_proportion=p, nanohead_dim=nd)
        if want is None:
            with pytest.raises(ValueError):
                GPTConfig(**kw)
            rejected += 1
            continue
        s = nanohead_split(GPTConfig(**kw))
        got = (s.n_normal, s.normal_dim, s.n_nano, s.n_kv_normal, s.n_kv_nano)
        exp = (want.n_normal, want.normal_dim, want.n_nano, want.n_kv_normal, want.n_kv_nano)
        assert got == exp, (kw, got, exp)
        if s.n_nano:
            assert s.nano_dim == nd
        assert s.n_normal * s.normal_dim + s.n_nano * s.nano_dim == n_embd
        assert s.normal_dim % 2 == 0 and s.normal_dim >= 2
        checked += 1
    assert checked > 500 and rejected > 0
