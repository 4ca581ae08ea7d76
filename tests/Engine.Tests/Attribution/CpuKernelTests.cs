using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Rules;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// The fused CPU loops give bit-identical values and multipliers to the torch compositions they replace (the GELU secant),
/// or the same to float32 rounding (the exact softmax, which uses .NET's vectorized exp), with a reference of the inputs'
/// shape or one shared row, with inputs equal to the reference (derivative fallback), and fall back to the composition
/// for layouts they do not take.
/// </summary>
public class CpuKernelTests
{
    private static (Tensor Grad, Tensor Y, Tensor Y0) Run(Tensor x, Tensor r, bool kernels)
    {
        bool before = CpuKernels.Enabled;
        CpuKernels.Enabled = kernels;
        try
        {
            using var _ = enable_grad();
            var xg = x.detach().clone().requires_grad_(true);
            var y = RescaleRule.Activation(new Act(xg, r), Activation.GeluErf, promote: true);
            y.X.sum().backward();
            return (xg.grad!.clone(), y.X.detach().clone(), y.Ref.detach().clone());
        }
        finally { CpuKernels.Enabled = before; }
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && (a == b).all().item<bool>();

    public static TheoryData<bool, bool> Layouts => new()
    {
        { false, false }, // reference of the inputs' shape
        { true, false },  // one shared reference row
        { false, true },  // non-contiguous inputs: the composition
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void GeluSecantKernelIsBitIdenticalToTheComposition(bool sharedReference, bool transposed)
    {
        var (x64, r64) = RuleConservationTests.Inputs(seed: 7, shape: new long[] { 8, 6, 40 });
        var x = x64.to_type(ScalarType.Float32);
        var r = (sharedReference ? r64[..1] : r64).to_type(ScalarType.Float32);
        if (sharedReference) x[0] = r[0].clone(); // row 0 equal to the reference everywhere: the derivative fallback
        if (transposed) { x = x.transpose(1, 2); r = r.transpose(1, 2); }

        long runs = CpuKernels.Runs;
        var fused = Run(x, r, kernels: true);
        Assert.Equal(transposed ? runs : runs + 1, CpuKernels.Runs);
        var composed = Run(x, r, kernels: false);

        Assert.True(Same(fused.Y, composed.Y), "values");
        Assert.True(Same(fused.Y0, composed.Y0), "reference values");
        Assert.True(Same(fused.Grad, composed.Grad), $"multipliers: max |Δ| {(fused.Grad - composed.Grad).abs().max().item<float>():E2}");
        Assert.False(fused.Grad.isnan().any().item<bool>(), "no NaN left where x == x0");
    }

    private static (Tensor Grad, Tensor Y, Tensor Y0) Softmax(Tensor x, Tensor r, Tensor weights, bool kernels)
    {
        bool before = CpuKernels.Enabled;
        CpuKernels.Enabled = kernels;
        try
        {
            using var _ = enable_grad();
            var xg = x.detach().clone().requires_grad_(true);
            var y = SoftmaxRule.Apply(new Engine.Attribution.DeepLiftOps(), new Act(xg, r), -1, SoftmaxRuleKind.Exact, promote: true);
            (y.X * weights).sum().backward();
            return (xg.grad!.clone(), y.X.detach().clone(), y.Ref.detach().clone());
        }
        finally { CpuKernels.Enabled = before; }
    }

    /// <summary>Attention-like scores with what the kernel must get right: masked keys (finfo.min in both halves), a row whose
    /// reference sits far above (the shift is the reference's maximum), one far below (its exps all underflow: logsumexp),
    /// a row equal to its reference (Δ = 0), and a row length that is not a multiple of the vector width.</summary>
    private static (Tensor X, Tensor R) Scores(bool sharedReference, long length)
    {
        var gen = new TorchSharp.torch.Generator(11);
        long rows = sharedReference ? 1 : 4;
        var x = randn(new long[] { 4, 3, 6, length }, generator: gen) * 3;
        var r = randn(new long[] { rows, 3, 6, length }, generator: gen) * 3;
        double min = finfo(ScalarType.Float32).min;
        r[0, 0, 1].copy_(x[0, 0, 1] + 60);  // reference far above: c from x0, and softmax(x) from x's own maximum
        r[0, 0, 2].copy_(x[0, 0, 2] - 200); // reference far below: its exps underflow in float32
        x[0, 1, 0].copy_(r[0, 1, 0]);       // equal to the reference: the exp rules' Δ = 0 fallback
        x.narrow(-1, length - 3, 3).fill_(min); // the last three keys masked, in both halves
        r.narrow(-1, length - 3, 3).fill_(min);
        return (x, r);
    }

    [Theory]
    [InlineData(false, 37L)]
    [InlineData(true, 37L)]
    [InlineData(true, 128L)]
    [InlineData(false, 5L)]
    public void SoftmaxKernelMatchesTheCompositionAndConserves(bool sharedReference, long length)
    {
        var (x, r) = Scores(sharedReference, length);
        var weights = randn(x.shape, generator: new TorchSharp.torch.Generator(3));
        long runs = CpuKernels.Runs;
        var fused = Softmax(x, r, weights, kernels: true);
        bool avx512 = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        Assert.Equal(avx512 ? runs + 1 : runs, CpuKernels.Runs); // without AVX-512 the kernel declines: the composition ran
        var composed = Softmax(x, r, weights, kernels: false);

        Assert.False(fused.Grad.isnan().any().item<bool>() || fused.Y.isnan().any().item<bool>(), "no NaN");
        Assert.True(Same(fused.Y0, composed.Y0), "reference values: softmax(x0) by torch in both");
        double valueGap = (fused.Y - composed.Y).abs().max().item<float>();
        Assert.True(valueGap <= 1e-6, $"values differ by {valueGap:E2}");
        double scale = composed.Grad.abs().max().item<float>();
        double gradGap = (fused.Grad - composed.Grad).abs().max().item<float>();
        Assert.True(gradGap <= 1e-5 * scale, $"multipliers differ by {gradGap:E2} (largest {scale:E2})");
        // Summation to delta for f = Σ w·y: Σ ∂f/∂x · (x − x0) = Σ w · (y − y0), to float32 rounding.
        var x64 = x.to_type(ScalarType.Float64);
        var r64 = r.to_type(ScalarType.Float64).expand(x.shape);
        var delta = (weights.to_type(ScalarType.Float64) * (fused.Y.to_type(ScalarType.Float64) - fused.Y0.to_type(ScalarType.Float64).expand(x.shape))).sum().item<double>();
        // masked entries: x − x0 = 0 there, so they add nothing (no inf · 0: the difference is taken as 0)
        var dx = where(x64 == r64, zeros_like(x64), x64 - r64);
        var sum = (fused.Grad.to_type(ScalarType.Float64) * dx).sum().item<double>();
        var size = (weights.to_type(ScalarType.Float64) * fused.Y.to_type(ScalarType.Float64)).abs().sum().item<double>();
        Assert.True(Math.Abs(sum - delta) <= 1e-5 * size, $"Σ m·Δx = {sum:E6} against Δf = {delta:E6}");
    }

    /// <summary>Each row's reference: its group's [1, l, …] padded to the width (zeros; finfo.min along a softmax's keys).</summary>
    private static Tensor PaddedPerRow(IReadOnlyList<Tensor> tapes, long[] groupOfRow, long[] shape, bool keysMasked)
    {
        var perRow = zeros(shape);
        for (int b = 0; b < groupOfRow.Length; b++)
        {
            var tape = tapes[(int)groupOfRow[b]];
            long l = tape.shape[keysMasked ? 3 : 1];
            var row = perRow[b].unsqueeze(0);
            if (keysMasked)
            {
                row.narrow(3, l, shape[3] - l).fill_(finfo(ScalarType.Float32).min); // masked keys, over the padded queries' zeros
                row.narrow(2, 0, l).narrow(3, 0, l).copy_(tape);
            }
            else row.narrow(1, 0, l).copy_(tape);
        }
        return perRow;
    }

    /// <summary>
    /// A padded batch of several lengths gives the fused loops each length's reference as its tape holds it, at its own
    /// length, and the group of each row (rows 0–2 against group 1, rows 3–4 against 0, rows 5–7 against 2; lengths 6, 4, 5
    /// of width 6 for GELU, 9, 6, 7 of 9 for the softmax). The loops read the padding's values past each length (GELU: 0;
    /// scores: 0 on padded queries, finfo.min on masked keys) and compute, bit for bit, what they compute with each row's
    /// reference padded and copied out to it. A map that a row reads wrong (off by one group) fails. The copied-out rows
    /// go through the torch composition too, which reads no map.
    /// </summary>
    [Fact]
    public void FusedLoopsOnEachGroupsTapeEqualTheReferencePaddedAndCopiedOutToEveryRow()
    {
        var groupOfRow = new long[] { 1, 1, 1, 0, 0, 2, 2, 2 };
        var (x64, r64) = RuleConservationTests.Inputs(seed: 5, shape: new long[] { 8, 6, 40 });
        var x = x64.to_type(ScalarType.Float32);
        var lengths = new long[] { 6, 4, 5 };
        var tapes = lengths.Select((l, j) => r64[j].unsqueeze(0).narrow(1, 0, l).to_type(ScalarType.Float32).contiguous()).ToList();
        var copied = PaddedPerRow(tapes, groupOfRow, x.shape, keysMasked: false);
        x[4] = copied[4].clone(); // a row equal to its reference everywhere: the derivative fallback through the groups
        x[6] = copied[6].clone(); // and one of a padded group, equal to 0 past its length too

        // GELU: the grouped rule against the plain rule on the copied-out reference (itself the fused loop, bit-identical
        // to the composition: GeluSecantKernelIsBitIdenticalToTheComposition).
        using (enable_grad())
        {
            long runs = CpuKernels.Runs, grouped0 = CpuKernels.GroupedRuns;
            var xg = x.detach().clone().requires_grad_(true);
            var grouped = RescaleRule.GroupedActivation(xg, tapes, groupOfRow, null, Activation.GeluErf, promote: true);
            Assert.NotNull(grouped);
            Assert.Equal((runs + 1, grouped0 + 1), (CpuKernels.Runs, CpuKernels.GroupedRuns));
            grouped!.sum().backward();
            var plain = Run(x, copied, kernels: false); // the torch composition
            Assert.True(Same(grouped.detach(), plain.Y), "GELU values");
            Assert.True(Same(xg.grad!, plain.Grad), $"GELU multipliers: max |Δ| {(xg.grad! - plain.Grad).abs().max().item<float>():E2}");
            var wrong = Run(x, PaddedPerRow(tapes, new long[] { 1, 1, 1, 0, 2, 2, 2, 2 }, x.shape, keysMasked: false), kernels: false);
            Assert.False(Same(xg.grad!, wrong.Grad), "a row read against another group's reference changes its multipliers");
            Assert.Null(RescaleRule.GroupedActivation(xg, tapes.Select(t => t.transpose(1, 2).contiguous()).ToList(), groupOfRow, null, Activation.GeluErf, promote: true));

            // Packed: each text's real positions one after another [1, N, 40], each against its group's whole tape. The
            // same numbers, bit for bit, as the padded batch's real positions.
            var rowLengths = groupOfRow.Select(j => lengths[j]).ToArray();
            var xp = cat(rowLengths.Select((l, b) => x.narrow(0, b, 1).narrow(1, 0, l)).ToArray(), 1).detach().requires_grad_(true);
            long packed0 = CpuKernels.PackedRuns;
            var packed = RescaleRule.GroupedActivation(xp, tapes, groupOfRow, rowLengths, Activation.GeluErf, promote: true);
            Assert.NotNull(packed);
            Assert.Equal(packed0 + 1, CpuKernels.PackedRuns);
            packed!.sum().backward();
            Tensor Pack(Tensor padded) => cat(rowLengths.Select((l, b) => padded.narrow(0, b, 1).narrow(1, 0, l)).ToArray(), 1);
            Assert.True(Same(packed.detach(), Pack(grouped.detach())), "packed GELU values");
            Assert.True(Same(xp.grad!, Pack(xg.grad!)), $"packed GELU multipliers: max |Δ| {(xp.grad! - Pack(xg.grad!)).abs().max().item<float>():E2}");
            // A text's length that is not its tape's: declined, not misread.
            var wrongLengths = (long[])rowLengths.Clone();
            (wrongLengths[0], wrongLengths[3]) = (wrongLengths[3], wrongLengths[0]);
            Assert.Null(RescaleRule.GroupedActivation(xp, tapes, groupOfRow, wrongLengths, Activation.GeluErf, promote: true));
        }

        if (!System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated) return; // the softmax loop needs AVX-512
        const long width = 9;
        var gen = new TorchSharp.torch.Generator(13);
        var scoreLengths = new long[] { 9, 6, 7 };
        var scoreTapes = scoreLengths.Select(l => (randn(new long[] { 1, 2, l, l }, generator: gen) * 3).contiguous()).ToList();
        var scores = randn(new long[] { 8, 2, width, width }, generator: gen) * 3;
        for (int b = 0; b < 8; b++) // each text's keys past its length masked, as the pass masks them
        {
            long l = scoreLengths[groupOfRow[b]];
            scores[b].narrow(2, l, width - l).fill_(finfo(ScalarType.Float32).min);
        }
        var scoreCopied = PaddedPerRow(scoreTapes, groupOfRow, scores.shape, keysMasked: true);
        scores[0, 1, 2].copy_(scoreCopied[0, 1, 2]); // a row equal to its reference: the exp rules' Δ = 0 fallback
        var weights = randn(scores.shape, generator: gen);
        using (enable_grad())
        {
            var xg = scores.detach().clone().requires_grad_(true);
            var grouped = SoftmaxRule.GroupedExact(xg, scoreTapes, groupOfRow, -1);
            Assert.NotNull(grouped);
            (grouped! * weights).sum().backward();
            var plain = Softmax(scores, scoreCopied, weights, kernels: true);
            Assert.True(Same(grouped.detach(), plain.Y), "softmax values");
            Assert.True(Same(xg.grad!, plain.Grad), $"softmax multipliers: max |Δ| {(xg.grad! - plain.Grad).abs().max().item<float>():E2}");
            Assert.False(xg.grad!.isnan().any().item<bool>());
            // and both the composition's, to float32 rounding (the kernel's own exp)
            var composed = Softmax(scores, scoreCopied, weights, kernels: false);
            double valueGap = (grouped.detach() - composed.Y).abs().max().item<float>();
            double gradGap = (xg.grad! - composed.Grad).abs().max().item<float>(), scale = composed.Grad.abs().max().item<float>();
            Assert.True(valueGap <= 1e-6 && gradGap <= 1e-5 * scale, $"softmax against the composition: values {valueGap:E2}, multipliers {gradGap:E2} (largest {scale:E2})");
            var wrong = Softmax(scores, PaddedPerRow(scoreTapes, new long[] { 1, 1, 1, 0, 2, 2, 2, 2 }, scores.shape, keysMasked: true), weights, kernels: true);
            Assert.False(Same(xg.grad!, wrong.Grad), "a row read against another group's reference changes its multipliers");
        }
    }

    [Fact]
    public void SoftmaxKernelLeavesOtherLayoutsToTheComposition()
    {
        var (x, r) = Scores(sharedReference: true, length: 37);
        var weights = randn(x.shape, generator: new TorchSharp.torch.Generator(3));
        long runs = CpuKernels.Runs;
        var transposed = Softmax(x.transpose(2, 3).contiguous().transpose(2, 3), r, weights, kernels: true); // not contiguous
        var float64 = Softmax(x.to_type(ScalarType.Float64), r.to_type(ScalarType.Float64), weights.to_type(ScalarType.Float64), kernels: true);
        Assert.Equal(runs, CpuKernels.Runs);
        Assert.False(transposed.Grad.isnan().any().item<bool>() || float64.Grad.isnan().any().item<bool>());
    }
}
