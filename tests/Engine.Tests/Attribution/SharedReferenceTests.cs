using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// One reference shared by a batch (one row, broadcast): it stays one row through the whole network (the reference
/// half costs one text, not B), each text's f(x0) is the reference's output at that text's own target, and the
/// result equals giving every text its own copy of the reference.
/// </summary>
public class SharedReferenceTests
{
    private static (ITextModel Model, Tensor Ids, Tensor Reference) Case(ScalarType dtype)
    {
        var c = RepoPaths.LoadCase("tiny-bert-L2");
        var model = ModelLoader.Load(RepoPaths.Reference("tiny-bert-L2"), dtype: dtype);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var refIds = tensor(Json.Long2(c.GetProperty("baseline_ids")))[..1];
        return (model, ids, model.WordEmbeddings(refIds));
    }

    [Fact]
    public void ReferenceHalfStaysOneRowThroughEveryLayer()
    {
        var (model, ids, reference) = Case(ScalarType.Float64);
        using var _ = model;
        Assert.True(ids.shape[0] > 1);
        var ops = new RecordingOps(new DeepLiftOps());
        using (enable_grad())
        {
            var x = model.WordEmbeddings(ids).detach().requires_grad_(true);
            var logits = model.Forward(ops, new Act(x, reference), ones_like(ids));
            Assert.Equal(1, logits.Ref.shape[0]);
        }
        Assert.NotEmpty(ops.ReferenceRows);
        Assert.All(ops.ReferenceRows, rows => Assert.Equal(1, rows));
    }

    [Theory]
    [InlineData(OutputKind.Logit)]
    [InlineData(OutputKind.CenteredLogit)]
    [InlineData(OutputKind.Probability)]
    public void MixedTargetsWithASharedReferenceEqualPerTextReferences(OutputKind kind)
    {
        var (model, ids, reference) = Case(ScalarType.Float64);
        using var _ = model;
        long n = ids.shape[0];
        var targets = Enumerable.Range(0, (int)n).Select(i => (long)(i % model.OutputSize)).ToArray();
        Assert.Contains(targets, t => t != targets[0]);
        var options = new MethodOptions { Output = kind };
        var shared = new DeepLift().Attribute(model, new AttributionBatch(ids, ones_like(ids), new[] { reference }, targets), options);
        var own = new DeepLift().Attribute(model, new AttributionBatch(ids, ones_like(ids), new[] { reference.expand(n, -1, -1).contiguous() }, targets), options);
        Assert.True((shared.Fx0 - own.Fx0).abs().max().item<double>() <= 1e-12, "f(x0) per text");
        Assert.True((shared.Scores - own.Scores).abs().max().item<double>() <= 1e-12 * Math.Max(1, own.Scores.abs().max().item<double>()), "scores");
        Assert.True(shared.Delta.abs().max().item<double>() <= 1e-10, $"delta {shared.Delta.abs().max().item<double>():E2}");
    }

    /// <summary>Records the batch size of the reference half every nonlinear op receives.</summary>
    private sealed class RecordingOps(TensorOps inner) : TensorOps
    {
        public List<long> ReferenceRows { get; } = new();
        private Act Note(Act a) { ReferenceRows.Add(a.Ref.shape[0]); return a; }
        public override Act Apply(Act a, Activation activation) => inner.Apply(Note(a), activation);
        public override Act Softmax(Act a, long dim) => inner.Softmax(Note(a), dim);
        public override Act LayerNorm(Act a, Tensor weight, Tensor bias, double eps) => inner.LayerNorm(Note(a), weight, bias, eps);
        public override Act MatMul(Act a, Act b) => inner.MatMul(Note(a), Note(b));
        public override Act Mul(Act a, Act b) => inner.Mul(Note(a), Note(b));
    }
}
