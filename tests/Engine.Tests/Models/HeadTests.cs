using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>
/// Heads and outputs come from the config, never guessed: multi-label is a sigmoid per label, regression a value,
/// a bare encoder an embedding; a config without "architectures" is resolved from the weights or refused by name.
/// </summary>
public sealed class HeadTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-head-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Text = "the plot was dull but the acting was wonderful";

    [Fact]
    public void MultiLabelProbabilitiesAreSigmoidsOfTheReferenceLogits()
    {
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("bert-multi-label");
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder("bert-multi-label"));
        Assert.Equal(ProblemType.MultiLabel, model.Problem);
        var probs = HeadOutputs.Probabilities(model.Logits(ids, mask).to_type(ScalarType.Float64), model.Problem)!;
        Assert.True((probs - l32.sigmoid()).abs().max().item<double>() <= 1e-5);
        // Independent labels: their probabilities do not sum to 1.
        Assert.True((probs.sum(1) - 1).abs().min().item<double>() > 0.1);
    }

    [Fact]
    public void MultiLabelPredictAndExplainMeanTheSigmoid()
    {
        using var loaded = LoadedModel.Load(ArchitectureFixtures.Folder("bert-multi-label"), CPU);
        var explainer = new TextExplainer(loaded);
        var p = explainer.Predict(new[] { Text })[0];
        Assert.Equal("multi-label", p.Prediction.Head);
        Assert.Equal(p.Logits.Select(l => 1 / (1 + Math.Exp(-l))).ToArray(), p.Probabilities, (a, b) => Math.Abs(a - b) < 1e-12);
        Assert.Equal(p.Probabilities.Max(), p.Prediction.Probability);

        var prob = explainer.Explain(new[] { Text }, new ExplainRequest { Output = "probability", Precision = "float64", Target = "2" })[0];
        Assert.Equal("probability", prob.Output);
        Assert.Equal(p.Probabilities[2], prob.Fx, 1e-6);
        Assert.True(prob.RelativeDelta <= 1e-10, $"relative delta {prob.RelativeDelta:E2}");
        Assert.True(prob.Scores.Max(Math.Abs) > 1e-4);

        // The default output (centered-logit) is the label's own logit on independent labels.
        var byDefault = explainer.Explain(new[] { Text }, new ExplainRequest { Precision = "float64", Target = "2" })[0];
        Assert.Equal("logit", byDefault.Output);
        Assert.Equal(p.Logits[2], byDefault.Fx, 1e-6);
        Assert.True(byDefault.RelativeDelta <= 1e-10);
    }

    [Fact]
    public void RegressionPredictsTheValueAndExplainsIt()
    {
        var (ids, mask, l32, _) = ArchitectureFixtures.Case("bert-regression");
        using var loaded = LoadedModel.Load(ArchitectureFixtures.Folder("bert-regression"), CPU);
        Assert.Equal(ProblemType.Regression, loaded.Float32.Problem);
        Assert.True((loaded.Float32.Logits(ids, mask).to_type(ScalarType.Float64) - l32).abs().max().item<double>() <= 1e-5);
        var explainer = new TextExplainer(loaded);
        var p = explainer.Predict(new[] { Text })[0];
        Assert.Equal("regression", p.Prediction.Head);
        Assert.Equal(p.Logits[0], p.Prediction.Value);
        Assert.Empty(p.Probabilities);
        Assert.True(double.IsNaN(p.Prediction.Probability));
        Assert.Contains("value", PredictionText.Describe(p, loaded.Config.Labels));

        // centered-logit of one output is identically 0: the default explains the value itself.
        var e = explainer.Explain(new[] { Text }, new ExplainRequest { Precision = "float64" })[0];
        Assert.Equal("logit", e.Output);
        Assert.Equal(p.Logits[0], e.Fx, 1e-6);
        Assert.True(Math.Abs(e.Fx - e.Fx0) > 1e-3);
        Assert.True(e.Scores.Max(Math.Abs) > 1e-4, "scores should not be all zero");
        Assert.True(e.RelativeDelta <= 1e-10, $"relative delta {e.RelativeDelta:E2}");

        var refused = Assert.Throws<AttributionRequestException>(() => explainer.Explain(new[] { Text }, new ExplainRequest { Output = "probability" }));
        Assert.Equal("output", refused.Field);
        Assert.Contains("regression", refused.Message);
    }

    [Fact]
    public void BareEncoderPredictGivesItsPooledEmbedding()
    {
        var config = RandomModels.BertConfig(layers: 1, hidden: 16, heads: 2, intermediate: 32, vocab: 200, labels: 0, architecture: "BertModel");
        using (var model = RandomModels.Create(config, seed: 5, std: 0.1, stress: true)) RandomModels.Save(model, Path.Combine(_dir, "bare"));
        using var loaded = LoadedModel.Load(Path.Combine(_dir, "bare"), CPU);
        var p = new TextExplainer(loaded).Predict(new[] { "[unused7] [unused9]" })[0];
        Assert.Equal("embedding", p.Prediction.Head);
        Assert.Empty(p.Probabilities);
        Assert.Equal(16, p.Logits.Length);
        Assert.StartsWith("embedding", PredictionText.Describe(p, loaded.Config.Labels));
    }

    [Fact]
    public void SingleLabelStaysASoftmax()
    {
        using var loaded = LoadedModel.Load(ArchitectureFixtures.Folder("bert-no-architectures"), CPU);
        var p = new TextExplainer(loaded).Predict(new[] { Text })[0];
        Assert.Equal("single-label", p.Prediction.Head);
        Assert.Equal(1.0, p.Probabilities.Sum(), 1e-12);
    }

    [Fact]
    public void BertClassifierWithoutPoolerAndArchitecturesIsRefusedByName()
    {
        var dir = ArchitectureFixtures.CopyWithConfig("bert-no-architectures", Path.Combine(_dir, "nopooler"), _ => { });
        using (var source = CheckpointFolder.OpenWeights(ArchitectureFixtures.Folder("bert-no-architectures")))
        {
            var kept = source.Tensors.Keys.Where(k => !k.Contains("pooler.")).Select(k => new KeyValuePair<string, Tensor>(k, source.Load(k))).ToList();
            SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), kept);
        }
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Equal("architectures", e.Field);
        Assert.Contains("pooler.dense.weight", e.Message);
        Assert.Contains(Path.Combine(dir, "config.json"), e.Message);
    }

    [Theory]
    [InlineData("pad_token_id", 45, "pad_token_id")]
    [InlineData("problem_type", "ordinal", "problem_type")]
    [InlineData("position_embedding_type", "relative_key", "position_embedding_type")]
    public void ConfigsTheModelWouldComputeWronglyAreRefusedByField(string field, object value, string expectedField)
    {
        var dir = ArchitectureFixtures.CopyWithConfig("xlm-roberta", Path.Combine(_dir, field), c =>
            c[field] = value is int i ? System.Text.Json.Nodes.JsonValue.Create(i) : System.Text.Json.Nodes.JsonValue.Create((string)value));
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Equal(expectedField, e.Field);
        Assert.Contains(Path.Combine(dir, "config.json"), e.Message);
    }

    [Fact]
    public void SingleLabelProblemTypeWithOneLabelIsRefused()
    {
        var dir = ArchitectureFixtures.CopyWithConfig("bert-regression", Path.Combine(_dir, "one"), c => c["problem_type"] = "single_label_classification");
        Assert.Equal("problem_type", Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir)).Field);
    }
}
