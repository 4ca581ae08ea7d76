using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Rules;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// Local conservation of every rule, in float64: after backpropagating <c>⟨w, y⟩</c> through the rule,
/// <c>Σ (x − x0)·grad == Σ w·(y − y0)</c> to rounding; and the multipliers against closed forms (the derivative
/// where <c>x == x0</c>, the secant <c>(g(x) − g(x0))/(x − x0)</c> elsewhere).
/// </summary>
public class RuleConservationTests(ITestOutputHelper output)
{
    private const ScalarType F64 = ScalarType.Float64;

    /// <summary>
    /// Inputs [8, 16] and references: row 0 equal, row 1 differs by ~1e-9 (relative), row 2 by ~1e-14, row 3 equal in
    /// half its features, row 4 huge differences (×<paramref name="huge"/>), the rest ordinary. <paramref name="domain"/>
    /// maps both to the op's domain (e.g. positive for log).
    /// </summary>
    internal static (Tensor X, Tensor R) Inputs(int seed, double huge = 30, Func<Tensor, Tensor>? domain = null, long[]? shape = null)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed);
        shape ??= new long[] { 8, 16 };
        var x = randn(shape, dtype: F64, generator: gen) * 2;
        var r = randn(shape, dtype: F64, generator: gen) * 2;
        r[0] = x[0].clone();
        r[1] = x[1] * (1 + 1e-9 * randn(x[1].shape, dtype: F64, generator: gen));
        r[2] = x[2] * (1 + 1e-14 * randn(x[2].shape, dtype: F64, generator: gen));
        var half = (rand(x[3].shape, dtype: F64, generator: gen) < 0.5);
        r[3] = where(half, x[3], r[3]);
        x[4] = x[4] * huge;
        domain ??= t => t;
        return (domain(x), domain(r));
    }

    internal static Tensor Weights(long[] shape, int seed)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed + 1000);
        return 0.5 + rand(shape, dtype: F64, generator: gen); // away from 0, so grad / w is the multiplier
    }

    /// <summary>Applies <paramref name="rule"/> to (x, r), backprops ⟨w, y⟩; returns grad, y, y0.</summary>
    internal static (Tensor Grad, Tensor Y, Tensor Y0) Run(Func<Act, Act> rule, Tensor x, Tensor r, Tensor w)
    {
        using var _ = enable_grad();
        var xg = x.detach().clone().requires_grad_(true);
        var y = rule(new Act(xg, r));
        (w * y.X).sum().backward();
        return (xg.grad!.detach().clone(), y.X.detach(), y.Ref.detach());
    }

    private void AssertConserves(string name, Tensor x, Tensor r, Tensor grad, Tensor w, Tensor y, Tensor y0, double tol = 1e-12)
    {
        double lhs = ((x - r) * grad).sum().item<double>();
        double rhs = (w * (y - y0)).sum().item<double>();
        double scale = (w * (y - y0)).abs().sum().item<double>();
        double rel = Math.Abs(lhs - rhs) / scale;
        output.WriteLine($"{name}: Σ Δx·m = {lhs:G17}, Σ w·Δy = {rhs:G17}, relative error {rel:E2}");
        Assert.True(double.IsFinite(lhs) && double.IsFinite(rhs), $"{name}: not finite");
        Assert.True(rel <= tol, $"{name}: relative conservation error {rel:E2} > {tol:E0}");
    }

    public static TheoryData<string> ElementwiseRules() => new()
    {
        "exp", "log", "square", "inverse-sqrt", "gelu-erf", "gelu-tanh", "relu", "tanh", "sigmoid",
    };

    private const double Eps = 1e-12;

    /// <summary>Rule, plain function, input domain and the size of the "huge" row for each elementwise rule.</summary>
    private static (Func<Act, Act> Rule, Func<Tensor, Tensor> G, Func<Tensor, Tensor>? Domain, double Huge) Elementwise(string name) => name switch
    {
        "exp" => (a => RescaleRule.Exp(a, true), t => t.exp(), null, 100),
        "log" => (a => RescaleRule.Log(a, true), t => t.log(), t => t.exp(), 30),
        "square" => (a => RescaleRule.Square(a, true), t => t.square(), null, 1e6),
        "inverse-sqrt" => (a => RescaleRule.InverseSqrt(a, Eps, true), t => (t + Eps).rsqrt(), t => t.square(), 1e3),
        "gelu-erf" => (a => RescaleRule.Activation(a, Activation.GeluErf, true), t => PlainOps.Plain(t, Activation.GeluErf), null, 30),
        "gelu-tanh" => (a => RescaleRule.Activation(a, Activation.GeluTanh, true), PlainOps.GeluTanh, null, 30),
        "relu" => (a => RescaleRule.Activation(a, Activation.Relu, true), t => t.relu(), null, 1e6),
        "tanh" => (a => RescaleRule.Activation(a, Activation.Tanh, true), t => t.tanh(), null, 30),
        "sigmoid" => (a => RescaleRule.Activation(a, Activation.Sigmoid, true), t => t.sigmoid(), null, 30),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(ElementwiseRules))]
    public void ElementwiseRuleConservesPerElement(string name)
    {
        var (rule, g, domain, huge) = Elementwise(name);
        var (x, r) = Inputs(1, huge, domain);
        var w = Weights(x.shape, 1);
        var (grad, y, y0) = Run(rule, x, r, w);

        // Values are the plain function's on both halves.
        Assert.Equal(0.0, (y - g(x)).abs().max().item<double>());
        Assert.Equal(0.0, (y0 - g(r)).abs().max().item<double>());

        AssertConserves(name, x, r, grad, w, y, y0);
        // Per element: Δx·m == w·Δy, to rounding of the values involved.
        var err = ((x - r) * grad - w * (y - y0)).abs();
        var bound = 1e-13 * w * (y.abs() + y0.abs()) + 1e-300;
        Assert.True((err <= bound).all().item<bool>(), $"{name}: per-element error up to {(err / (w * (y.abs() + y0.abs()) + 1e-300)).max().item<double>():E2} of |y|+|y0|");
        Assert.True(grad.isfinite().all().item<bool>(), $"{name}: non-finite multiplier");
    }

    [Theory]
    [MemberData(nameof(ElementwiseRules))]
    public void ElementwiseMultiplierIsDerivativeAtReferenceAndSecantElsewhere(string name)
    {
        var (rule, g, domain, huge) = Elementwise(name);
        var (x, r) = Inputs(2, huge, domain);
        var w = Weights(x.shape, 2);
        var (grad, _, _) = Run(rule, x, r, w);
        var m = grad / w;

        // The derivative by autograd of the plain function.
        Tensor derivative;
        using (enable_grad())
        {
            var xg = x.detach().clone().requires_grad_(true);
            g(xg).sum().backward();
            derivative = xg.grad!.detach().clone();
        }

        // Row 0 (x == x0 exactly): the derivative.
        var d0 = (m[0] - derivative[0]).abs() / (derivative[0].abs() + 1e-300);
        output.WriteLine($"{name}: x == x0: max relative |m − g'| = {d0.max().item<double>():E2}");
        Assert.True((d0 <= 1e-12).all().item<bool>() || (m[0] - derivative[0]).abs().max().item<double>() <= 1e-15,
            $"{name}: multiplier at x == x0 differs from g' by {d0.max().item<double>():E2} (relative)");

        // Row 1 (x ≈ x0, 1e-9 relative): close to the derivative (secant − tangent = O(g''·Δx) plus the ratio's rounding).
        var d1 = (m[1] - derivative[1]).abs() / (derivative[1].abs() + 1);
        output.WriteLine($"{name}: x ≈ x0: max |m − g'| / (|g'| + 1) = {d1.max().item<double>():E2}");
        Assert.True(d1.max().item<double>() <= 1e-6, $"{name}: near x0 the multiplier is {d1.max().item<double>():E2} from g'");

        // Ordinary rows (|Δx| not small): the plain secant, computed independently.
        var others = cat(new[] { m[TensorIndex.Slice(5, null)], m[4].unsqueeze(0) });
        var xs = cat(new[] { x[TensorIndex.Slice(5, null)], x[4].unsqueeze(0) });
        var rs = cat(new[] { r[TensorIndex.Slice(5, null)], r[4].unsqueeze(0) });
        var secant = (g(xs) - g(rs)) / (xs - rs);
        var ds = (others - secant).abs() / (secant.abs() + 1e-300);
        // Where the secant itself cancels (both ends in a flat tail), compare absolutely against the ends' size.
        var flat = (others - secant).abs() <= 1e-14 * (g(xs).abs() + g(rs).abs()) / (xs - rs).abs();
        output.WriteLine($"{name}: secant rows: max relative |m − secant| = {ds.max().item<double>():E2}");
        Assert.True((ds <= 1e-10).logical_or(flat).all().item<bool>(), $"{name}: multiplier differs from the secant by {ds.max().item<double>():E2}");
    }

    /// <summary>A reference with batch size 1 shared by every row (how the text facade runs): still conserves.</summary>
    [Theory]
    [MemberData(nameof(ElementwiseRules))]
    public void ElementwiseRuleConservesWithBroadcastReference(string name)
    {
        var (rule, _, domain, huge) = Elementwise(name);
        var (x, r) = Inputs(3, huge, domain);
        var r1 = r[0].unsqueeze(0);
        var w = Weights(x.shape, 3);
        var (grad, y, y0) = Run(rule, x, r1, w);
        Assert.Equal(new long[] { 1, 16 }, y0.shape);
        AssertConserves(name + " (shared reference)", x, r1, grad, w, y, y0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ProductRuleMulConservesAndUsesMeanOfOtherFactor(bool broadcastReference)
    {
        var (a, a0) = Inputs(4);
        var (b, b0) = Inputs(5, huge: 1e3);
        if (broadcastReference) { a0 = a0[0].unsqueeze(0); b0 = b0[3].unsqueeze(0); }
        var w = Weights(a.shape, 4);
        var (ga, gb, z, z0) = RunBinary(ProductRule.Mul, a, a0, b, b0, w);
        Assert.Equal(0.0, (z - a * b).abs().max().item<double>());
        Assert.Equal(0.0, (z0 - a0 * b0).abs().max().item<double>());
        AssertBinaryConserves("mul", a, a0, b, b0, ga, gb, w, z, z0);
        AssertClose("mul ∂a", ga, w * (b + b0) / 2, 1e-15);
        AssertClose("mul ∂b", gb, w * (a + a0) / 2, 1e-15);
    }

    [Fact]
    public void ProductRuleMatMulConservesAndUsesMeanOfOtherFactor()
    {
        var (a, a0) = Inputs(6, shape: new long[] { 8, 3, 4, 5 });
        var (b, b0) = Inputs(7, huge: 1e3, shape: new long[] { 8, 3, 5, 6 });
        var w = Weights(new long[] { 8, 3, 4, 6 }, 6);
        var (ga, gb, z, z0) = RunBinary(ProductRule.MatMul, a, a0, b, b0, w);
        AssertClose("matmul value", z, a.matmul(b), 1e-15);
        AssertBinaryConserves("matmul", a, a0, b, b0, ga, gb, w, z, z0);
        AssertClose("matmul ∂A", ga, w.matmul(((b + b0) / 2).transpose(-1, -2)), 1e-14);
        AssertClose("matmul ∂B", gb, ((a + a0) / 2).transpose(-1, -2).matmul(w), 1e-14);
    }

    /// <summary>One factor is a constant (no grad, reference equal to input): the other gets the exact gradient.</summary>
    [Fact]
    public void ProductRuleWithConstantFactorConserves()
    {
        var (a, a0) = Inputs(8);
        var c = Inputs(9).X;
        var w = Weights(a.shape, 8);
        using var _ = enable_grad();
        var ag = a.detach().clone().requires_grad_(true);
        var z = ProductRule.Mul(new Act(ag, a0), new Act(c, c));
        (w * z.X).sum().backward();
        AssertConserves("mul by constant", a, a0, ag.grad!, w, z.X.detach(), z.Ref);
        AssertClose("mul by constant ∂a", ag.grad!, w * c, 0);
    }

    private (Tensor Ga, Tensor Gb, Tensor Z, Tensor Z0) RunBinary(Func<Act, Act, Act> rule, Tensor a, Tensor a0, Tensor b, Tensor b0, Tensor w)
    {
        using var _ = enable_grad();
        var ag = a.detach().clone().requires_grad_(true);
        var bg = b.detach().clone().requires_grad_(true);
        var z = rule(new Act(ag, a0), new Act(bg, b0));
        (w * z.X).sum().backward();
        return (ag.grad!.detach().clone(), bg.grad!.detach().clone(), z.X.detach(), z.Ref.detach());
    }

    private void AssertBinaryConserves(string name, Tensor a, Tensor a0, Tensor b, Tensor b0, Tensor ga, Tensor gb, Tensor w, Tensor z, Tensor z0)
    {
        double lhs = ((a - a0) * ga).sum().item<double>() + ((b - b0) * gb).sum().item<double>();
        double rhs = (w * (z - z0)).sum().item<double>();
        double scale = (w * (z - z0)).abs().sum().item<double>();
        double rel = Math.Abs(lhs - rhs) / scale;
        output.WriteLine($"{name}: Σ Δa·ma + Σ Δb·mb = {lhs:G17}, Σ w·Δz = {rhs:G17}, relative error {rel:E2}");
        Assert.True(rel <= 1e-12, $"{name}: relative conservation error {rel:E2}");
    }

    private static void AssertClose(string name, Tensor actual, Tensor expected, double relTol)
    {
        double err = (actual - expected).abs().max().item<double>();
        double scale = expected.abs().max().item<double>();
        Assert.True(err <= relTol * scale, $"{name}: max error {err:E2} (scale {scale:E2})");
    }

    public static TheoryData<int> Seeds() => new() { 10, 11, 12 };

    private static (Tensor Gamma, Tensor Beta) LayerNormParameters(int seed)
    {
        var gen = new TorchSharp.torch.Generator((ulong)seed + 7);
        return (1 + 0.3 * randn(16, dtype: F64, generator: gen), 0.1 * randn(16, dtype: F64, generator: gen));
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void LayerNormRuleConserves(int seed)
    {
        var (x, r) = Inputs(seed, huge: 1e3);
        var (gamma, beta) = LayerNormParameters(seed);
        var w = Weights(x.shape, seed);
        var ops = new DeepLiftOps();
        var (grad, y, y0) = Run(a => LayerNormRule.Apply(ops, a, gamma, beta, Eps, true), x, r, w);

        AssertClose("layernorm value", y, nn.functional.layer_norm(x, new long[] { 16 }, gamma, beta, Eps), 1e-12);
        AssertClose("layernorm reference value", y0, nn.functional.layer_norm(r, new long[] { 16 }, gamma, beta, Eps), 1e-12);
        AssertConserves($"layernorm seed {seed}", x, r, grad, w, y, y0);
        // Where the row equals its reference, the multipliers are LayerNorm's gradient.
        var exact = LayerNormGradient(x[0], gamma, beta, w[0]);
        Assert.True((grad[0] - exact).abs().max().item<double>() <= 1e-13 * exact.abs().max().item<double>());
    }

    /// <summary>
    /// Degenerate rows: a constant input (centred to 0, variance only eps = 1e-12), a constant reference, a reference
    /// 1e-6 the input's size. Conservation holds, but the product rule's two terms there are ~1/sqrt(eps) = 1e6 times
    /// the output change and cancel, so rounding shows at ~1e-16 × 1e6 relative: the bound is 1e-9, not 1e-12.
    /// </summary>
    [Theory]
    [MemberData(nameof(Seeds))]
    public void LayerNormRuleConservesOnDegenerateRows(int seed)
    {
        var (x, r) = Inputs(seed);
        x = x[TensorIndex.Slice(5, 8)].clone();
        r = r[TensorIndex.Slice(5, 8)].clone();
        x[0] = full(16, 3.25, dtype: F64);
        r[1] = full(16, -1.5, dtype: F64);
        r[2] = r[2] * 1e-6;
        var (gamma, beta) = LayerNormParameters(seed);
        var w = Weights(x.shape, seed);
        var ops = new DeepLiftOps();
        var (grad, y, y0) = Run(a => LayerNormRule.Apply(ops, a, gamma, beta, Eps, true), x, r, w);
        AssertClose("layernorm value", y, nn.functional.layer_norm(x, new long[] { 16 }, gamma, beta, Eps), 1e-12);
        Assert.True(grad.isfinite().all().item<bool>());
        AssertConserves($"layernorm degenerate rows, seed {seed}", x, r, grad, w, y, y0, tol: 1e-9);
    }

    private static Tensor LayerNormGradient(Tensor row, Tensor gamma, Tensor beta, Tensor w)
    {
        using var _ = enable_grad();
        var xg = row.detach().clone().requires_grad_(true);
        (w * nn.functional.layer_norm(xg, new long[] { row.shape[^1] }, gamma, beta, Eps)).sum().backward();
        return xg.grad!.detach().clone();
    }

    /// <summary>
    /// Exact softmax along dims 0, 1 and −1 of [6, 5, 7]: slices where the whole row equals its reference, elements
    /// equal at random, one slice with differences of ~100 (×30), one whose reference sits 300 below.
    /// </summary>
    [Theory]
    [InlineData(0L)]
    [InlineData(1L)]
    [InlineData(-1L)]
    [InlineData(2L)]
    public void SoftmaxExactConservesAlongAnyDim(long dim)
    {
        var gen = new TorchSharp.torch.Generator(20 + (ulong)(dim + 2));
        var shape = new long[] { 6, 5, 7 };
        var x = randn(shape, dtype: F64, generator: gen) * 3;
        var r = randn(shape, dtype: F64, generator: gen) * 3;
        x[2] = x[2] * 30;                                              // huge differences
        r[3] = r[3] - 300;                                             // reference rows far below (dims 1, 2)
        r = where(rand(shape, dtype: F64, generator: gen) < 0.2, x, r);  // some elements equal
        r[0] = x[0].clone();                                           // rows along dims 1, 2 equal
        r[TensorIndex.Colon, 0] = x[TensorIndex.Colon, 0].clone();     // rows along dims 0, 2 equal
        var w = Weights(shape, 20);
        var ops = new DeepLiftOps();
        var (grad, y, y0) = Run(a => SoftmaxRule.Exact(ops, a, dim, true), x, r, w);

        AssertClose("softmax value", y, x.softmax(dim), 1e-13);
        AssertClose("softmax reference value", y0, r.softmax(dim), 1e-13);
        Assert.True(grad.isfinite().all().item<bool>(), "non-finite multiplier");
        AssertConserves($"softmax dim {dim}", x, r, grad, w, y, y0);

        // Where a whole row equals its reference, the multipliers are the softmax Jacobian (the true gradient).
        Tensor trueGrad;
        using (enable_grad())
        {
            var xg = x.detach().clone().requires_grad_(true);
            (w * xg.softmax(dim)).sum().backward();
            trueGrad = xg.grad!.detach().clone();
        }
        var equalRow = (x == r).all(dim < 0 ? dim + 3 : dim, keepdim: true).expand_as(x);
        Assert.True(equalRow.any().item<bool>());
        var diff = (grad - trueGrad).abs().masked_select(equalRow).max().item<double>();
        output.WriteLine($"dim {dim}: rows equal to the reference: max |m − ∂softmax| = {diff:E2}");
        Assert.True(diff <= 1e-14, $"multiplier on equal rows differs from the gradient by {diff:E2}");
    }

    /// <summary>
    /// One half's whole row sits so far below the shared shift that its exps underflow to 0 (float64: > ~745 below;
    /// float32: > ~104): the sum is 0 and a plain <c>log</c> gives −inf. Values and multipliers must stay finite and conserve.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float64, 800.0)]
    [InlineData(ScalarType.Float64, 5000.0)]
    [InlineData(ScalarType.Float32, 120.0)]
    [InlineData(ScalarType.Float32, 1e4)]
    public void SoftmaxExactSurvivesUnderflowOfOneHalf(ScalarType dtype, double gap)
    {
        var gen = new TorchSharp.torch.Generator(77);
        var x = randn(new long[] { 4, 6 }, dtype: F64, generator: gen) * 2;
        var r = randn(new long[] { 4, 6 }, dtype: F64, generator: gen) * 2;
        r[0] = r[0] - gap;   // reference row far below the input's
        x[1] = x[1] - gap;   // input row far below the reference's
        r[2] = x[2] - gap;   // the same row shifted: same softmax, exps of the reference underflow
        var xt = x.to_type(dtype);
        var rt = r.to_type(dtype);
        var w = Weights(x.shape, 77).to_type(dtype);
        var ops = new DeepLiftOps();
        var (grad, y, y0) = Run(a => SoftmaxRule.Exact(ops, a, -1, true), xt, rt, w);
        Assert.True(y.isfinite().all().item<bool>(), "non-finite softmax value");
        Assert.True(y0.isfinite().all().item<bool>(), "non-finite reference softmax value");
        Assert.True(grad.isfinite().all().item<bool>(), "non-finite multiplier");
        // One shift shared by both halves (needed for conservation) puts the far half's u = x − c at ~gap, so u carries
        // an absolute rounding error of ~gap × machine epsilon: that is the attainable accuracy of its values here.
        double eps = dtype == ScalarType.Float64 ? 2.2e-16 : 1.2e-7;
        double tol = 4 * eps * gap;
        AssertClose("softmax value", y.to_type(F64), xt.to_type(F64).softmax(-1), tol);
        AssertClose("softmax reference value", y0.to_type(F64), rt.to_type(F64).softmax(-1), tol);
        var xd = xt.to_type(F64);
        var rd = rt.to_type(F64);
        var contributions = ((xd - rd) * grad.to_type(F64)).sum(1);
        var change = (w.to_type(F64) * (y.to_type(F64) - y0.to_type(F64))).sum(1);
        // The terms are as large as gap × multiplier (≤ 1), so rounding is relative to the gap.
        var err = (contributions - change).abs().max().item<double>();
        output.WriteLine($"{dtype} gap {gap}: max |Σ Δx·m − Σ w·Δy| per row = {err:E2}");
        Assert.True(err <= 40 * eps * gap, $"conservation error {err:E2}");
    }

    /// <summary>Softmax inside a toy model, along dim 1 of [B, C, D] (not the last): whole-model summation-to-delta.</summary>
    [Fact]
    public void SoftmaxAlongMiddleDimConservesInsideModel()
    {
        var gen = new TorchSharp.torch.Generator(31);
        long B = 4, C = 6, D = 5;
        var w1 = randn(new long[] { D, D }, dtype: F64, generator: gen);
        var b1 = randn(D, dtype: F64, generator: gen);
        var w2 = randn(new long[] { 3, D }, dtype: F64, generator: gen);
        var mix = randn(new long[] { C, C }, dtype: F64, generator: gen);
        var x = randn(new long[] { B, C, D }, dtype: F64, generator: gen) * 2;
        var r = zeros(1, C, D, dtype: F64); // one shared reference
        var ops = new DeepLiftOps();

        Act Model(TensorOps o, Act a)
        {
            var h = o.Linear(a, w1, b1);
            h = o.Map(h, t => mix.matmul(t));                     // mixes along C (linear)
            var p = o.Softmax(h, 1);                               // softmax along C
            var v = o.Apply(o.Linear(a, w1, null), Activation.Tanh);
            var ctx = o.Mul(p, v);                                  // gate: product rule
            var z = o.Linear(o.Map(ctx, t => t.sum(1)), w2, null); // [B, 3]
            return o.Map(z, t => t.select(1, 1));                  // one output per row
        }

        Tensor grad, f, f0;
        using (enable_grad())
        {
            var xg = x.detach().clone().requires_grad_(true);
            var y = Model(ops, new Act(xg, r));
            y.X.sum().backward();
            grad = xg.grad!.detach().clone();
            f = y.X.detach();
            f0 = y.Ref.detach().expand_as(f);
        }
        var plainF = Model(PlainOps.Instance, new Act(x)).X;
        var plainF0 = Model(PlainOps.Instance, new Act(r)).X;
        AssertClose("model output", f, plainF, 1e-13);
        AssertClose("model reference output", f0, plainF0.expand_as(f0), 1e-13);
        var sums = ((x - r) * grad).sum(new long[] { 1, 2 });
        var delta = (f - f0 - sums).abs();
        var rel = delta / (f - f0).abs();
        output.WriteLine($"softmax along dim 1 in a model: f − f0 = {string.Join(", ", (f - f0).data<double>().ToArray().Select(v => v.ToString("G6")))}; max relative delta {rel.max().item<double>():E2}");
        Assert.True(rel.max().item<double>() <= 1e-12, $"relative delta {rel.max().item<double>():E2}");
    }

    /// <summary>float32 with promoted multipliers: the same rules conserve to float32 rounding.</summary>
    [Fact]
    public void RulesConserveInFloat32()
    {
        var (x64, r64) = Inputs(40, huge: 10, shape: new long[] { 8, 16 });
        var x = x64.to_type(ScalarType.Float32);
        var r = r64.to_type(ScalarType.Float32);
        var w = Weights(x.shape, 40).to_type(ScalarType.Float32);
        var ops = new DeepLiftOps();
        var gamma = ones(16);
        var beta = zeros(16);
        foreach (var (name, rule) in new (string, Func<Act, Act>)[]
        {
            ("exp", a => RescaleRule.Exp(a, true)),
            ("gelu", a => RescaleRule.Activation(a, Activation.GeluErf, true)),
            ("softmax", a => SoftmaxRule.Exact(ops, a, -1, true)),
            ("layernorm", a => LayerNormRule.Apply(ops, a, gamma, beta, 1e-12, true)),
        })
        {
            var (grad, y, y0) = Run(rule, x, r, w);
            double lhs = ((x.to_type(F64) - r.to_type(F64)) * grad.to_type(F64)).sum().item<double>();
            double rhs = (w.to_type(F64) * (y.to_type(F64) - y0.to_type(F64))).sum().item<double>();
            double scale = (w.to_type(F64) * (y.to_type(F64).abs() + y0.to_type(F64).abs())).sum().item<double>();
            output.WriteLine($"float32 {name}: |Σ Δx·m − Σ w·Δy| / Σ w(|y|+|y0|) = {Math.Abs(lhs - rhs) / scale:E2}");
            Assert.True(Math.Abs(lhs - rhs) <= 1e-6 * scale, $"float32 {name}: {Math.Abs(lhs - rhs) / scale:E2}");
        }
    }
}
