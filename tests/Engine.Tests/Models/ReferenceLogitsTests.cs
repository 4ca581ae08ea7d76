using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>The loader reproduces the PyTorch reference logits of tests/fixtures/reference (see its README).</summary>
public class ReferenceLogitsTests
{
    [Theory]
    [InlineData("tiny-bert-L1", "logits_x", null)]
    [InlineData("tiny-bert-L2", "logits_x", null)]
    [InlineData("tiny-bert-stress", "logits_x_f64", "attention_mask")]
    [InlineData("tiny-distilbert", "logits_f64", "attention_mask")]
    [InlineData("tiny-distilbert/stress", "logits_f64", "attention_mask")]
    [InlineData("tiny-roberta", "logits_f64", "attention_mask")]
    [InlineData("tiny-roberta/stress", "logits_f64", "attention_mask")]
    public void LogitsMatchReference(string folder, string logitsField, string? maskField)
    {
        var c = RepoPaths.LoadCase(folder);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = maskField is null ? ones_like(ids) : tensor(Json.Long2(c.GetProperty(maskField)));
        var expected = tensor(Json.Double2(c.GetProperty(logitsField)));
        using var model = ModelLoader.Load(RepoPaths.Reference(folder));
        var logits = model.Logits(ids, mask).to_type(ScalarType.Float64);
        double maxDiff = (logits - expected).abs().max().item<double>();
        Assert.True(maxDiff <= 1e-5, $"{folder}: max |logits - reference| = {maxDiff:E3}");

        if (c.TryGetProperty("logits_baseline", out var baseline))
        {
            var refIds = tensor(Json.Long2(c.GetProperty("baseline_ids")));
            var b = model.Logits(refIds, mask).to_type(ScalarType.Float64);
            double diff = (b - tensor(Json.Double2(baseline))).abs().max().item<double>();
            Assert.True(diff <= 1e-5, $"{folder}: baseline max diff {diff:E3}");
        }
    }

    [Theory]
    [InlineData("tiny-bert-stress", "logits_x_f64", "attention_mask")]
    [InlineData("tiny-roberta/stress", "logits_f64", "attention_mask")]
    public void Float64LogitsMatchTightly(string folder, string logitsField, string maskField)
    {
        var c = RepoPaths.LoadCase(folder);
        using var model = ModelLoader.Load(RepoPaths.Reference(folder), dtype: ScalarType.Float64);
        var logits = model.Logits(tensor(Json.Long2(c.GetProperty("input_ids"))), tensor(Json.Long2(c.GetProperty(maskField))));
        double maxDiff = (logits - tensor(Json.Double2(c.GetProperty(logitsField)))).abs().max().item<double>();
        Assert.True(maxDiff <= 1e-9, $"{folder}: float64 max diff {maxDiff:E3}");
    }
}
