using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Rules;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// The fused CPU loops give bit-identical values and multipliers to the torch compositions they replace, with a
/// reference of the inputs' shape or one shared row, with inputs equal to the reference (derivative fallback), and
/// fall back to the composition for layouts they do not take.
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
}
