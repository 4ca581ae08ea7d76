using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// Without targets every method explains each text's predicted class, taken from a forward pass it runs anyway,
/// and returns the model's logits at x: the same targets, logits and scores as naming the predicted classes.
/// </summary>
public class PredictedTargetTests
{
    [Theory]
    [MemberData(nameof(Methods))]
    public void NoTargetsExplainThePredictedClass(string method)
    {
        var c = RepoPaths.LoadCase("tiny-bert-stress");
        using var model = ModelLoader.Load(RepoPaths.Reference("tiny-bert-stress"), dtype: ScalarType.Float64);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        var refIds = DeepLiftReferenceTests.ReferenceIds(ids, model);
        var references = new[] { model.WordEmbeddings(refIds) };
        var logits = model.Logits(ids, mask);
        var predicted = logits.argmax(1).data<long>().ToArray();
        var options = new MethodOptions { Steps = 8, Samples = 3 };

        var implicitTargets = AttributionMethods.Create(method).Attribute(model, new AttributionBatch(ids, mask, references, null), options);
        var named = AttributionMethods.Create(method).Attribute(model, new AttributionBatch(ids, mask, references, predicted), options);

        Assert.Equal(predicted, implicitTargets.Targets);
        Assert.Equal(predicted, named.Targets);
        Assert.True((implicitTargets.Logits - logits).abs().max().item<double>() < 1e-10, "logits at x");
        Assert.True((implicitTargets.Scores - named.Scores).abs().max().item<double>() <= 1e-12, "scores");
        Assert.True((implicitTargets.Fx0 - named.Fx0).abs().max().item<double>() <= 1e-12, "f(x0)");
    }

    public static TheoryData<string> Methods => new(AttributionMethods.Names);
}
