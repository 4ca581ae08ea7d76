using System.Text.Json.Nodes;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Attribution;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>Writing and loading checkpoints, and every way a model folder can be wrong.</summary>
public sealed class CheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-ckpt-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string SaveRandom(string name, ModelConfigOverrides? o = null)
    {
        var config = RandomModels.BertConfig(layers: 2, hidden: 32, heads: 4, intermediate: 64, vocab: 200, labels: 3);
        using var model = RandomModels.Create(config, seed: 3, std: 0.1, stress: true);
        var dir = Path.Combine(_dir, name);
        RandomModels.Save(model, dir);
        return dir;
    }

    public sealed record ModelConfigOverrides;

    [Fact]
    public void RandomModelRoundTripsThroughSafetensorsWithIdenticalLogits()
    {
        var config = RandomModels.BertConfig(layers: 2, hidden: 32, heads: 4, intermediate: 64, vocab: 200, labels: 3);
        using var model = RandomModels.Create(config, seed: 11, std: 0.1, stress: true);
        var dir = Path.Combine(_dir, "rt");
        RandomModels.Save(model, dir);
        using var loaded = ModelLoader.Load(dir);
        var ids = tensor(new long[,] { { 101, 5, 17, 99, 102 }, { 101, 150, 3, 102, 0 } });
        var mask = tensor(new long[,] { { 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 0 } });
        var a = model.Logits(ids, mask);
        var b = loaded.Logits(ids, mask);
        Assert.True(a.abs().max().item<float>() > 0.01f, "logits should not be trivially small");
        Assert.Equal(a.data<float>().ToArray(), b.data<float>().ToArray());
        Assert.Equal(config.Labels, loaded.Config.Labels);
    }

    [Fact]
    public void HalfPrecisionCheckpointsLoadAsFloat32()
    {
        var config = RandomModels.BertConfig(layers: 1, hidden: 16, heads: 2, intermediate: 32, vocab: 120, labels: 2);
        using var model = RandomModels.Create(config, seed: 2, std: 0.1, stress: true);
        foreach (var dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        {
            var dir = Path.Combine(_dir, dtype.ToString());
            using var half = model.To(dtype);
            RandomModels.Save(half, dir);
            using var loaded = ModelLoader.Load(dir);
            Assert.Equal(ScalarType.Float32, loaded.DType);
            var ids = tensor(new long[,] { { 101, 7, 8, 102 } });
            var expected = half.To(ScalarType.Float32).Logits(ids, ones_like(ids));
            Assert.True((loaded.Logits(ids, ones_like(ids)) - expected).abs().max().item<float>() < 1e-6f, dtype.ToString());
        }
    }

    [Fact]
    public void BertBaseSizedConfigLoadsAndPredicts()
    {
        var config = RandomModels.BertBase(labels: 2);
        using var model = RandomModels.Create(config, seed: 0);
        var dir = Path.Combine(_dir, "base");
        Directory.CreateDirectory(dir);
        File.Copy(MiniLmModel.VocabPath, Path.Combine(dir, "vocab.txt")); // bert-base-uncased's vocabulary
        RandomModels.Save(model, dir);
        using var loaded = LoadedModel.Load(dir, CPU);
        Assert.Equal(12, loaded.Config.Layers);
        Assert.Equal(30522, loaded.Config.VocabSize);
        var results = new TextExplainer(loaded).Predict(new[] { "a bert-base sized model predicts", "another sentence" });
        Assert.All(results, r => Assert.InRange(r.Probabilities.Sum(), 1 - 1e-9, 1 + 1e-9));
        Assert.Equal("[CLS]", results[0].Tokens[0]);
    }

    [Fact]
    public void MissingFolderOrFilesNameThePath()
    {
        var e1 = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(Path.Combine(_dir, "nope")));
        Assert.Contains("nope", e1.Message);
        var dir = SaveRandom("missing");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        var e2 = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("model.safetensors", e2.Message);
        File.Delete(Path.Combine(dir, "config.json"));
        var e3 = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("config.json", e3.Message);
    }

    [Fact]
    public void TruncatedOrCorruptedSafetensorsHeaderIsReported()
    {
        var dir = SaveRandom("corrupt");
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);

        File.WriteAllBytes(path, bytes[..4]);
        Assert.Contains("model.safetensors", Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir)).Message);

        File.WriteAllBytes(path, bytes[..100]); // header cut
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("header", e.Message);

        var garbled = (byte[])bytes.Clone();
        for (int i = 8; i < 40; i++) garbled[i] = (byte)'#';
        File.WriteAllBytes(path, garbled);
        Assert.Contains("corrupted", Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir)).Message);

        File.WriteAllBytes(path, bytes[..(bytes.Length - 64)]); // data cut
        var e4 = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.NotNull(e4.Field);
        Assert.Contains(e4.Field!, e4.Message);
    }

    [Fact]
    public void WrongShapesMissingAndUnexpectedKeysAreListedTogether()
    {
        var dir = SaveRandom("shapes");
        var configPath = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["intermediate_size"] = 48; // every FFN weight now has the wrong shape
        config["num_hidden_layers"] = 3; // layer 2 is missing
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("bert.encoder.layer.0.intermediate.dense.weight", e.Message);
        Assert.Contains("expected [48,32]", e.Message);
        Assert.Contains("missing key 'bert.encoder.layer.2.attention.self.query.weight'", e.Message);

        config["intermediate_size"] = 64;
        config["num_hidden_layers"] = 1; // layer 1 is now unexpected
        File.WriteAllText(configPath, config.ToJsonString());
        var e2 = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains("unexpected key 'bert.encoder.layer.1.", e2.Message);
    }

    [Theory]
    [InlineData("architectures", "[\"GPT2LMHeadModel\"]", "Unknown architecture")]
    [InlineData("hidden_act", "\"swish\"", "hidden_act")]
    [InlineData("hidden_size", "\"wide\"", "hidden_size")]
    public void BadConfigFieldsAreNamed(string field, string json, string expected)
    {
        var dir = SaveRandom("cfg-" + field);
        var configPath = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config[field] = JsonNode.Parse(json);
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<ModelLoadException>(() => ModelLoader.Load(dir));
        Assert.Contains(expected, e.Message);
        Assert.Contains("config.json", e.Message + e.Path);
    }

    [Fact]
    public void EmptyTextIsRejectedWithTheField()
    {
        using var loaded = LoadedModel.Load(RepoPaths.Reference("tiny-bert-L1"), CPU);
        var e = Assert.Throws<AttributionRequestException>(() => new TextExplainer(loaded).Predict(new[] { "fine", "  " }));
        Assert.Equal("texts[1]", e.Field);
    }
}
