using AttributionFleet.Engine.Text;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>Load errors name the file or folder and say what to do, before any forward pass.</summary>
public sealed class LoadErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("af-loaderr-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TokenizerLargerThanTheEmbeddingsIsRefusedAtLoad()
    {
        var dir = ArchitectureFixtures.CopyWithConfig("bert-no-architectures", Path.Combine(_dir, "big-vocab"), _ => { });
        File.AppendAllLines(Path.Combine(dir, "vocab.txt"), Enumerable.Range(0, 10).Select(i => $"extra{i}"));
        var e = Assert.Throws<ModelLoadException>(() => LoadedModel.Load(dir, CPU));
        Assert.Equal("vocab_size", e.Field);
        Assert.Contains(dir, e.Message);
        Assert.Contains("73", e.Message);
    }

    [Fact]
    public void UnknownModelTypeWithoutArchitecturesNamesTheSupportedOnes()
    {
        var dir = ArchitectureFixtures.CopyWithConfig("bert-no-architectures", Path.Combine(_dir, "mt"), c => c["model_type"] = "albert");
        var e = Assert.Throws<ModelLoadException>(() => AttributionFleet.Engine.Models.ModelLoader.Load(dir));
        Assert.Equal("model_type", e.Field);
        Assert.Contains("albert", e.Message);
        Assert.Contains("electra", e.Message);
    }
}
