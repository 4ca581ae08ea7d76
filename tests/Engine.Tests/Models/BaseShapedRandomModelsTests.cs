using AttributionFleet.Engine.Architectures;
using AttributionFleet.Engine.Architectures.DebertaV2;
using AttributionFleet.Engine.Architectures.ModernBert;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>
/// The base-sized DeBERTa-v3 and ModernBERT configs that `fleet bench attribute --architecture` times
/// (<see cref="RandomModels.DebertaV3BaseConfigJson"/>, <see cref="RandomModels.ModernBertBaseConfigJson"/>): read by the
/// family's own parser into the published checkpoints' settings and parameter counts (model cards: DeBERTa-v3-base 86M
/// backbone + 98M embedding, ModernBERT-base 149M), and a random model of that shape is the model its saved checkpoint
/// loads as.
/// </summary>
public sealed class BaseShapedRandomModelsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-base-shaped-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static long Parameters(IEnumerable<WeightRole> roles) => roles.Sum(r => r.Shape.Aggregate(1L, (a, b) => a * b));

    [Fact]
    public void DebertaV3BaseConfigHasTheCheckpointsSettingsAndSize()
    {
        var c = RandomModels.ParseConfig(RandomModels.DebertaV3BaseConfigJson());
        Assert.Equal(DebertaV2Architecture.Family, c.Family);
        Assert.Equal((12, 768, 12, 3072, 128100), (c.Layers, c.HiddenSize, c.Heads, c.IntermediateSize, c.VocabSize));
        Assert.Equal(new DebertaV2Settings(PositionBiasedInput: false, RelativeAttention: true, PositionBuckets: 256, MaxRelativePositions: 512,
            ContentToPosition: true, PositionToContent: true, ShareAttentionKey: true, NormalizeRelativeEmbeddings: true, PoolerActivation: "gelu"),
            DebertaV2Architecture.SettingsOf(c));
        var roles = new DebertaV2Architecture().Weights(c, withClassifier: true).Roles;
        Assert.Equal(98, Math.Round(Parameters(roles.Where(r => r.Role == "word")) / 1e6));
        Assert.Equal(86, Math.Round(Parameters(roles.Where(r => r.Role != "word")) / 1e6));
        Assert.Contains(roles, r => r.Role == "rel" && r.Shape.SequenceEqual(new[] { 512L, 768 }));
        Assert.DoesNotContain(roles, r => r.Role.EndsWith(".pk") || r.Role.EndsWith(".pq")); // share_att_key
    }

    [Theory]
    [InlineData("mean", ModernBertPooling.Mean)]
    [InlineData("cls", ModernBertPooling.Cls)]
    public void ModernBertBaseConfigHasTheCheckpointsSettingsAndSize(string pooling, ModernBertPooling expected)
    {
        var c = RandomModels.ParseConfig(RandomModels.ModernBertBaseConfigJson(pooling: pooling));
        Assert.Equal(ModernBertArchitecture.Family, c.Family);
        Assert.Equal((22, 768, 12, 1152, 50368, 50283), (c.Layers, c.HiddenSize, c.Heads, c.IntermediateSize, c.VocabSize, c.PadTokenId));
        var s = ModernBertArchitecture.SettingsOf(c);
        Assert.Equal(Enumerable.Range(0, 22).Select(i => i % 3 != 0), s.SlidingLayers);
        Assert.Equal((128, 160000.0, 10000.0, expected), (s.LocalAttention, s.GlobalRopeTheta, s.LocalRopeTheta, s.Pooling));
        Assert.False(s.NormBias || s.AttentionBias || s.MlpBias || s.ClassifierBias);
        var roles = new ModernBertArchitecture().Weights(c, withClassifier: true).Roles;
        Assert.Equal(149, Math.Round(Parameters(roles.Where(r => r.InBody)) / 1e6));
        Assert.DoesNotContain(roles, r => r.Kind == WeightKind.Bias && r.Role != "cls.b");
    }

    /// <summary>One layer of base width (a small vocabulary keeps the file small): built in memory, then saved and loaded.</summary>
    [Theory]
    [InlineData("deberta-v2")]
    [InlineData("modernbert")]
    public void RandomBaseShapedModelIsTheModelItsCheckpointLoadsAs(string family)
    {
        var json = family == "deberta-v2" ? RandomModels.DebertaV3BaseConfigJson(layers: 1, vocab: 2000) : RandomModels.ModernBertBaseConfigJson(layers: 1, vocab: 2000);
        using var random = RandomModels.Create(RandomModels.ParseConfig(json), seed: 0, std: 0.02);
        File.WriteAllText(Path.Combine(_dir, ModelLoader.ConfigFile), json);
        ModelLoader.SaveWeights(random, Path.Combine(_dir, ModelLoader.WeightsFile));
        using var loaded = ModelLoader.Load(_dir, CPU);

        using var scope = NewDisposeScope();
        var ids = randint(1000, 2000, new long[] { 2, 16 }, generator: new Generator(7));
        var mask = ones_like(ids);
        var expected = random.Logits(ids, mask);
        Assert.Equal(new long[] { 2, 2 }, expected.shape);
        Assert.True(expected.isfinite().all().item<bool>());
        Assert.Equal(0.0, (loaded.Logits(ids, mask) - expected).abs().max().item<float>());
    }
}
