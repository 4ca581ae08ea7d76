using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// tests/fixtures/reference/mlp-rescale: <c>y = fc4(sigmoid(fc3(tanh(fc2(relu(fc1(x)))))))</c> in float64, where Captum's rescale
/// rules and the exact rules coincide. Our DeepLift must equal Captum's attributions to ~1e-12 for every target.
/// </summary>
public class MlpRescaleTests(ITestOutputHelper output)
{
    private const string Folder = "mlp-rescale";

    private sealed record Mlp(Tensor[] Weights, Tensor[] Biases)
    {
        public Act Forward(TensorOps ops, Act x)
        {
            var h = ops.Apply(ops.Linear(x, Weights[0], Biases[0]), Activation.Relu);
            h = ops.Apply(ops.Linear(h, Weights[1], Biases[1]), Activation.Tanh);
            h = ops.Apply(ops.Linear(h, Weights[2], Biases[2]), Activation.Sigmoid);
            return ops.Linear(h, Weights[3], Biases[3]);
        }
    }

    private static Mlp Load()
    {
        using var file = SafeTensorsFile.Open(Path.Combine(RepoPaths.Reference(Folder), "model.safetensors"));
        var w = Enumerable.Range(1, 4).Select(i => file.Load($"fc{i}.weight")).ToArray();
        var b = Enumerable.Range(1, 4).Select(i => file.Load($"fc{i}.bias")).ToArray();
        Assert.All(w, t => Assert.Equal(ScalarType.Float64, t.dtype));
        return new Mlp(w, b);
    }

    [Fact]
    public void OutputsMatchReference()
    {
        var c = RepoPaths.LoadCase(Folder);
        var mlp = Load();
        var x = tensor(Json.Double2(c.GetProperty("inputs")));
        var b = tensor(Json.Double2(c.GetProperty("baselines")));
        var yx = mlp.Forward(PlainOps.Instance, new Act(x)).X;
        var yb = mlp.Forward(PlainOps.Instance, new Act(b)).X;
        double dx = (yx - tensor(Json.Double2(c.GetProperty("outputs_x")))).abs().max().item<double>();
        double db = (yb - tensor(Json.Double2(c.GetProperty("outputs_baseline")))).abs().max().item<double>();
        output.WriteLine($"max |output − reference|: inputs {dx:E2}, baselines {db:E2}");
        Assert.True(dx <= 1e-14 && db <= 1e-14, $"{dx:E2} {db:E2}");

        // The DeepLift ops compute the same values on both halves.
        var both = mlp.Forward(new DeepLiftOps(), new Act(x, b));
        Assert.True((both.X - yx).abs().max().item<double>() <= 1e-15);
        Assert.True((both.Ref - yb).abs().max().item<double>() <= 1e-15);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    public void DeepLiftEqualsCaptum(int target)
    {
        var c = RepoPaths.LoadCase(Folder);
        var mlp = Load();
        var x = tensor(Json.Double2(c.GetProperty("inputs")));
        var b = tensor(Json.Double2(c.GetProperty("baselines")));
        var expected = c.GetProperty("captum_deeplift_by_target").GetProperty(target.ToString());
        var captum = tensor(Json.Double2(expected.GetProperty("attributions")));

        Tensor attributions, f, f0;
        using (enable_grad())
        {
            var xg = x.clone().requires_grad_(true);
            var ops = new DeepLiftOps();
            var y = TargetOutput.Select(ops, mlp.Forward(ops, new Act(xg, b)), Enumerable.Repeat((long)target, 5).ToArray(), OutputKind.Logit);
            y.X.sum().backward();
            attributions = (x - b) * xg.grad!;
            f = y.X.detach();
            f0 = y.Ref.detach();
        }
        double diff = (attributions - captum).abs().max().item<double>();
        var delta = f - f0 - attributions.sum(1);
        output.WriteLine($"target {target}: max |ours − Captum| = {diff:E2}; max |delta| = {delta.abs().max().item<double>():E2}");
        Assert.True(diff <= 1e-10, $"max |ours − Captum| = {diff:E2}");
        Assert.True(delta.abs().max().item<double>() <= 1e-14);

        // Row 4 equals its reference: all zero. Row 3 equals it in 3 features: those score exactly 0.
        Assert.Equal(0.0, attributions[4].abs().max().item<double>());
        var equal = (x[3] == b[3]);
        Assert.Equal(3, equal.sum().item<long>());
        Assert.Equal(0.0, attributions[3].masked_select(equal).abs().max().item<double>());
    }
}
