"""Embedding tables with row-sparse gradients (nn.Embedding(sparse=True)) in
a group with ``row_sparse=True``: each row keeps its own step count, a
sparse gradient steps only the rows it lists (duplicates summed first, in
their order), rows without a gradient stay untouched, as torch's
SparseAdam does; a dense gradient steps every row.

Two references, row by row:

- a bit-exact one: each listed row stepped alone by ``adopt_rs.adopt_step``
  (the core's dense f32 step, held to torch-adopt's golden trajectories by
  test_golden) with that row's moments and step count, duplicates summed in
  float32 in their order of appearance first (``np.add.at``);
- a plain NumPy model of ADOPT written out here in float64 (t == 0: v = g²;
  else m = lerp(m, clip(g / max(sqrt(v), eps), c(t)), 1 - beta1), p -= lr m,
  v = beta2 v + (1 - beta2) g²), held to the golden tolerance
  |x - r| <= 1e-6 |r| + 1e-4 lr t."""

import copy

import numpy as np
import pytest

import adopt_rs
from conftest import assert_close, same_bits

torch = pytest.importorskip("torch")
adopt = pytest.importorskip("adopt")  # torch-adopt

from adopt_rs.torch import ADOPT  # noqa: E402

LR, BETAS, EPS = 1e-2, (0.9, 0.9999), 1e-6


def clip(t):
    return t**0.25


class RowModel:
    """Both references of one table."""

    def __init__(self, table):
        self.p = table.detach().numpy().copy()
        rows, dim = self.p.shape
        self.m = np.zeros((rows, dim), np.float32)
        self.v = np.zeros((rows, dim), np.float32)
        self.t = np.zeros(rows, np.int64)
        # The float64 model.
        self.p64 = self.p.astype(np.float64)
        self.m64 = np.zeros((rows, dim))
        self.v64 = np.zeros((rows, dim))

    def step(self, rows, values):
        """``rows`` (listed, repeats allowed) and their ``values`` blocks;
        ``rows=None``: a dense gradient ``values`` of the table's shape."""
        if rows is None:
            rows = np.arange(self.p.shape[0])
        rows = np.asarray(rows)
        distinct = np.unique(rows)
        summed = np.zeros((self.p.shape[0], self.p.shape[1]), np.float32)
        for i, r in enumerate(rows):  # in order, float32, as the core
            summed[r] = values[i] if r not in rows[:i] else summed[r] + values[i]
        for r in distinct:  # the float64 model, at the row's count before this step
            g = summed[r].astype(np.float64)
            t = int(self.t[r])
            if t == 0:
                self.v64[r] = g * g
            else:
                normed = np.clip(g / np.maximum(np.sqrt(self.v64[r]), EPS), -clip(t), clip(t))
                self.m64[r] += (1 - BETAS[0]) * (normed - self.m64[r])
                self.p64[r] -= LR * self.m64[r]
                self.v64[r] = BETAS[1] * self.v64[r] + (1 - BETAS[1]) * g * g
        for r in distinct:
            g = summed[r].copy()
            self.t[r] = adopt_rs.adopt_step(self.p[r], g, self.m[r], self.v[r], int(self.t[r]), lr=LR)


def check(opt, table, model, what):
    st = opt.state[table]
    assert same_bits(table.detach().numpy(), model.p), what
    assert same_bits(st["exp_avg"].numpy(), model.m), what
    assert same_bits(st["exp_avg_sq"].numpy(), model.v), what
    assert st["step"].dtype == torch.float32 and st["step"].shape == (table.shape[0],)
    assert np.array_equal(st["step"].numpy(), model.t.astype(np.float32)), what
    assert_close(table.detach().numpy(), model.p64, LR, int(model.t.max()), what)


def sparse_grad(rows, values, shape, coalesce=False):
    g = torch.sparse_coo_tensor(torch.tensor([rows]), torch.as_tensor(values), shape, check_invariants=True)
    return g.coalesce() if coalesce else g


def batches(rows, steps, batch, seed):
    rng = np.random.default_rng(seed)
    # Skewed: low rows come up often, high rows rarely (some never).
    return [np.minimum(rng.zipf(1.6, batch) - 1, rows - 1) for _ in range(steps)]


@pytest.mark.parametrize("coalesce", [False, True], ids=["uncoalesced", "coalesced"])
def test_embedding_sparse_gradients_match_the_row_models(coalesce):
    torch.manual_seed(0)
    rows, dim = 40, 6
    emb = torch.nn.Embedding(rows, dim, sparse=True)
    head = torch.nn.Linear(dim, 1)
    opt = ADOPT(
        [{"params": emb.parameters(), "row_sparse": True}, {"params": head.parameters()}], lr=LR
    )
    model = RowModel(emb.weight)
    for t, idx in enumerate(batches(rows, 12, 16, 1), 1):
        opt.zero_grad()
        loss = head(emb(torch.from_numpy(idx))).pow(2).mean()
        loss.backward()
        g = emb.weight.grad
        assert g.is_sparse
        if coalesce:
            emb.weight.grad = g = g.coalesce()
        gi = g._indices()[0].numpy()
        gv = g._values().numpy()
        model.step(gi, gv)
        untouched = np.setdiff1d(np.arange(rows), np.flatnonzero(model.t))
        opt.step()
        check(opt, emb.weight, model, f"step {t}")
        assert untouched.size > 0  # some rows never had a gradient: unchanged
    assert len(set(model.t.tolist())) > 3  # rows at many different step counts


def test_repeated_rows_are_summed_in_order():
    rows, dim = 5, 3
    table = torch.nn.Parameter(torch.randn(rows, dim))
    opt = ADOPT([{"params": [table], "row_sparse": True}], lr=LR)
    model = RowModel(table)
    rng = np.random.default_rng(3)
    for t in range(6):
        listed = [2, 0, 2, 2, 4, 0] if t % 2 else [1, 3, 3]
        values = rng.standard_normal((len(listed), dim)).astype(np.float32) * 1e3
        values[1] *= 1e-7  # sums whose order matters in float32
        table.grad = sparse_grad(listed, values, (rows, dim))
        model.step(listed, values)
        opt.step()
        check(opt, table, model, f"step {t}")


def test_dense_gradient_on_a_table_steps_every_row():
    rows, dim = 6, 4
    table = torch.nn.Parameter(torch.randn(rows, dim))
    opt = ADOPT([{"params": [table], "row_sparse": True}], lr=LR)
    model = RowModel(table)
    g = torch.Generator().manual_seed(2)
    for t in range(5):
        if t in (1, 3):
            listed = [0, 5]
            values = torch.randn(2, dim, generator=g)
            table.grad = sparse_grad(listed, values, (rows, dim))
            model.step(listed, values.numpy())
        else:
            table.grad = torch.randn(rows, dim, generator=g)
            model.step(None, table.grad.numpy())
        opt.step()
        check(opt, table, model, f"step {t}")
    assert model.t.tolist() == [5, 3, 3, 3, 3, 5]


def test_empty_sparse_gradient_changes_nothing():
    table = torch.nn.Parameter(torch.randn(4, 2))
    opt = ADOPT([{"params": [table], "row_sparse": True}], lr=LR)
    table.grad = sparse_grad([1], torch.ones(1, 2), (4, 2))
    opt.step()
    before = table.detach().clone(), opt.state[table]["step"].clone()
    table.grad = torch.sparse_coo_tensor(
        torch.zeros(1, 0, dtype=torch.long), torch.zeros(0, 2), (4, 2), check_invariants=True
    )
    opt.step()
    assert same_bits(table.detach(), before[0]) and same_bits(opt.state[table]["step"], before[1])


def test_table_state_dict_round_trip_keeps_per_row_steps():
    rows, dim = 12, 3
    a = torch.nn.Parameter(torch.randn(rows, dim))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = ADOPT([{"params": [a], "row_sparse": True}], lr=LR)
    steps = batches(rows, 8, 5, 4)
    g = torch.Generator().manual_seed(5)
    grads = [sparse_grad(list(idx), torch.randn(len(idx), dim, generator=g), (rows, dim)) for idx in steps]
    for grad in grads[:4]:
        a.grad = grad.clone()
        opt_a.step()
    sd = copy.deepcopy(opt_a.state_dict())
    assert sd["state"][0]["step"].shape == (rows,)
    opt_b = ADOPT([{"params": [b], "row_sparse": True}], lr=LR)
    b.data.copy_(a.detach())
    opt_b.load_state_dict(sd)
    for grad in grads[4:]:
        a.grad, b.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    assert same_bits(a.detach(), b.detach())
    for k in ("step", "exp_avg", "exp_avg_sq"):
        assert same_bits(opt_a.state[a][k], opt_b.state[b][k])


def test_torch_adopt_state_loads_into_a_table_with_its_count_on_every_row():
    rows, dim = 5, 2
    theirs = torch.nn.Parameter(torch.randn(rows, dim))
    ours = torch.nn.Parameter(theirs.detach().clone())
    ref = adopt.ADOPT([theirs], lr=LR)
    g = torch.Generator().manual_seed(6)
    for _ in range(3):
        theirs.grad = torch.randn(rows, dim, generator=g)
        ref.step()
    opt = ADOPT([{"params": [ours], "row_sparse": True}], lr=LR)
    ours.data.copy_(theirs.detach())
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    st = opt.state[ours]
    assert st["step"].tolist() == [3.0] * rows
    model = RowModel(ours)
    model.m[:], model.v[:], model.t[:] = st["exp_avg"].numpy(), st["exp_avg_sq"].numpy(), 3
    model.m64, model.v64 = model.m.astype(np.float64), model.v.astype(np.float64)
    values = torch.randn(2, dim, generator=g)
    ours.grad = sparse_grad([4, 1], values, (rows, dim))
    model.step([4, 1], values.numpy())
    opt.step()
    check(opt, ours, model, "after loading")
    assert st["step"].tolist() == [3.0, 4.0, 3.0, 3.0, 4.0]


# -- bad input: refused, naming the parameter, nothing changed ------------------


def snapshot(opt, params):
    return [p.detach().clone() for p in params], {
        p: {k: v.clone() for k, v in opt.state[p].items()} for p in opt.state
    }


def assert_unchanged(opt, params, snap):
    values, state = snap
    for p, before in zip(params, values):
        assert same_bits(p.detach(), before)
    for p, st in state.items():
        for k, v in st.items():
            assert same_bits(opt.state[p][k], v)


def trained_pair():
    torch.manual_seed(9)
    table = torch.nn.Parameter(torch.randn(6, 3))
    dense = torch.nn.Parameter(torch.randn(6, 3))
    opt = ADOPT([{"params": [table], "row_sparse": True}, {"params": [dense]}], lr=LR)
    for _ in range(2):
        table.grad = sparse_grad([0, 2, 2], torch.randn(3, 3), (6, 3))
        dense.grad = torch.randn(6, 3)
        opt.step()
    return table, dense, opt


@pytest.mark.parametrize(
    "make_grads,exc,message",
    [
        (
            lambda: (sparse_grad([1], torch.ones(1, 3), (6, 3)), sparse_grad([1], torch.ones(1, 3), (6, 3))),
            TypeError,
            r"param_groups\[1\]\['params'\]\[0\].*sparse gradient.*row_sparse=True",
        ),
        (
            lambda: (
                torch.sparse_coo_tensor(torch.tensor([[1, 6]]), torch.ones(2, 3), (6, 3), check_invariants=False),
                torch.ones(6, 3),
            ),
            ValueError,
            r"param_groups\[0\]\['params'\]\[0\].*lists rows from 1 to 6",
        ),
        (
            lambda: (sparse_grad([1], torch.ones(1, 3), (6, 3)), torch.ones(6, 3),
                     sparse_grad([1], torch.ones(1, 3, dtype=torch.float64), (6, 3))),
            ValueError,
            r"sparse gradient of param_groups\[0\]\['params'\]\[0\].*float64",
        ),
        (
            lambda: (
                torch.sparse_coo_tensor(torch.tensor([[1], [2]]), torch.ones(1), (6, 3), check_invariants=True),
                torch.ones(6, 3),
            ),
            ValueError,
            r"param_groups\[0\]\['params'\]\[0\].*sparse_dim 2",
        ),
    ],
    ids=["sparse_grad_on_dense_param", "row_out_of_range", "float64_values", "not_whole_rows"],
)
def test_bad_sparse_gradients_are_refused_before_anything_changes(make_grads, exc, message):
    table, dense, opt = trained_pair()
    grads = make_grads()
    table.grad, dense.grad = grads[:2]
    if len(grads) > 2:  # torch checks the dtype of a gradient assigned, not of .data
        table.grad.data = grads[2]
    snap = snapshot(opt, [table, dense])
    with pytest.raises(exc, match=message):
        opt.step()
    assert_unchanged(opt, [table, dense], snap)


def test_bad_table_step_state_is_refused():
    table, dense, opt = trained_pair()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["step"] = torch.tensor([1.0, 2.5, 0, 0, 0, 0])
    snap = snapshot(opt, [table, dense])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*2.5 at row 1"):
        opt.load_state_dict(sd)
    assert_unchanged(opt, [table, dense], snap)
    sd["state"][0]["step"] = torch.zeros(4)
    with pytest.raises(ValueError, match="one count per row"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: torch.randn(6), "2-D float32"),
        (lambda: torch.randn(6, 2).to(torch.bfloat16), "2-D float32"),
    ],
    ids=["1d", "bf16"],
)
def test_row_sparse_group_takes_float32_tables_only(make, message):
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*" + message):
        ADOPT([{"params": [torch.nn.Parameter(make())], "row_sparse": True}])


def test_bfloat16_moments_of_a_table_are_refused():
    with pytest.raises(TypeError, match="embedding table: its moments are float32"):
        ADOPT(
            [{"params": [torch.nn.Parameter(torch.randn(3, 2))], "row_sparse": True}],
            moments_dtype=torch.bfloat16,
        )


def test_torch_save_of_a_mixed_optimizer_continues_bit_for_bit():
    """A table, bfloat16 weights with bfloat16 moments and a float32 bias
    in one optimizer, through torch.save / torch.load of its state dict."""
    import io

    def build(seed):
        torch.manual_seed(seed)
        emb = torch.nn.Embedding(20, 4, sparse=True)
        lin = torch.nn.Linear(4, 2)
        lin.weight.data = lin.weight.data.to(torch.bfloat16)
        opt = ADOPT(
            [
                {"params": emb.parameters(), "row_sparse": True},
                {"params": [lin.weight], "moments_dtype": torch.bfloat16},
                {"params": [lin.bias]},
            ],
            lr=LR,
        )
        return emb, lin, opt

    def train(emb, lin, opt, steps, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            opt.zero_grad()
            idx = torch.randint(0, 20, (6,), generator=g)
            x = emb(idx)
            y = x.to(torch.bfloat16) @ lin.weight.t()
            (y.float() + lin.bias).pow(2).sum().backward()
            opt.step()

    a = build(0)
    train(*a, 3, 1)
    buf = io.BytesIO()
    torch.save(a[2].state_dict(), buf)
    b = build(2)
    for pa, pb in zip(list(a[0].parameters()) + list(a[1].parameters()),
                      list(b[0].parameters()) + list(b[1].parameters())):
        pb.data.copy_(pa.detach())
    buf.seek(0)
    b[2].load_state_dict(torch.load(buf, weights_only=False))
    assert b[2].param_groups[1]["moments_dtype"] == torch.bfloat16
    train(*a, 3, 5)
    train(*b, 3, 5)
    pa = list(a[0].parameters()) + list(a[1].parameters())
    pb = list(b[0].parameters()) + list(b[1].parameters())
    for x, y in zip(pa, pb):
        assert same_bits(x.detach(), y.detach())
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert same_bits(a[2].state[x][k], b[2].state[y][k])
    assert a[2].state[a[1].weight]["exp_avg"].dtype == torch.bfloat16
    assert a[2].state[a[0].weight]["step"].shape == (20,)


def test_grad_scaler_unscales_sparse_table_gradients_in_the_step():
    """GradScaler("cpu") with a table: the unscaling is fused into the
    row-sparse step (bit for bit the unscaled step, for the scaler's powers
    of two), and a step with an inf gradient changes nothing."""
    def run(scaled, poison=False, steps=4):
        torch.manual_seed(12)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = ADOPT([{"params": emb.parameters(), "row_sparse": True}], lr=LR)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
        for t in range(steps):
            opt.zero_grad()
            loss = emb(torch.tensor([1, 4, 4, 7 if t % 2 else 2])).pow(2).sum()
            if poison and t == 3:
                loss = loss * float("inf")
            if scaled:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        return emb.weight.detach().clone(), {k: v.clone() for k, v in opt.state[emb.weight].items()}

    plain, scaled = run(False), run(True)
    assert same_bits(plain[0], scaled[0])
    for k in ("step", "exp_avg", "exp_avg_sq"):
        assert same_bits(plain[1][k], scaled[1][k])
    poisoned = run(True, poison=True)
    three = run(False, steps=3)  # step 4 skipped: the state after three steps
    assert same_bits(poisoned[0], three[0])
    for k in ("step", "exp_avg", "exp_avg_sq"):
        assert same_bits(poisoned[1][k], three[1][k])
    counts = np.zeros(10)
    for t in range(3):  # the rows of the three steps taken
        counts[np.unique([1, 4, 4, 7 if t % 2 else 2])] += 1
    assert poisoned[1]["step"].tolist() == counts.tolist()


def test_empty_tables():
    """A table of no rows steps (nothing); rows of no elements are refused."""
    empty = torch.nn.Parameter(torch.zeros(0, 4))
    other = torch.nn.Parameter(torch.ones(2, 2))
    opt = ADOPT([{"params": [empty, other], "row_sparse": True}], lr=LR)
    empty.grad = torch.zeros(0, 4)
    other.grad = sparse_grad([1], torch.ones(1, 2), (2, 2))
    opt.step()
    assert opt.state[empty]["step"].shape == (0,)
    assert opt.state[other]["step"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"\['params'\]\[0\].*rows of 0 elements"):
        ADOPT([{"params": [torch.nn.Parameter(torch.zeros(3, 0))], "row_sparse": True}])
