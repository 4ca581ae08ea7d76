using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Text;
using Xunit;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>Malformed requests fail with <see cref="AttributionRequestException"/> naming the offending field.</summary>
public class BadRequestTests(HostileModels fixture) : IClassFixture<HostileModels>
{
    private TextExplainer Explainer => new(fixture.Models["std1"]);

    public static TheoryData<string, string> Requests() => new()
    {
        { "method", "method" },
        { "output", "output" },
        { "softmax_rule", "softmax_rule" },
        { "precision", "precision" },
        { "integration", "integration" },
        { "target index", "target" },
        { "negative target", "target" },
        { "target label", "target" },
        { "reference length", "reference" },
        { "steps 0", "steps" },
        { "samples 0", "samples" },
        { "no reference", "reference" },
        { "max_length 1", "max_length" },
    };

    private static ExplainRequest Make(string what) => what switch
    {
        "method" => new() { Method = "lime" },
        "output" => new() { Output = "log-probability" },
        "softmax_rule" => new() { SoftmaxRule = "captum" },
        "precision" => new() { Precision = "float8" },
        "integration" => new() { Method = "integrated-gradients", Integration = "simpson" },
        "target index" => new() { Target = "3" },                    // 3 labels: 0..2
        "negative target" => new() { Target = "-1" },
        "target label" => new() { Target = "POSITIVE" },
        "reference length" => new() { References = new[] { "the movie" } }, // 4 tokens vs the text's 6
        "steps 0" => new() { Method = "integrated-gradients", Steps = 0 },
        "samples 0" => new() { Method = "gradient-shap", Samples = 0 },
        "no reference" => new() { References = Array.Empty<string>() },
        "max_length 1" => new() { MaxLength = 1 },
        _ => throw new ArgumentException(what),
    };

    [Theory]
    [MemberData(nameof(Requests))]
    public void BadFieldIsNamed(string what, string field)
    {
        var ex = Assert.Throws<AttributionRequestException>(() => Explainer.Explain(new[] { "the movie was great" }, Make(what)));
        Assert.Equal(field, ex.Field);
        Assert.False(string.IsNullOrWhiteSpace(ex.Message));
    }

    [Theory]
    [InlineData("", 0)]
    [InlineData("   ", 0)]
    public void EmptyTextIsNamedByIndex(string empty, int _)
    {
        var ex = Assert.Throws<AttributionRequestException>(() => Explainer.Explain(new[] { empty }, new ExplainRequest()));
        Assert.Equal("texts[0]", ex.Field);
        ex = Assert.Throws<AttributionRequestException>(() => Explainer.Explain(new[] { "the movie", empty }, new ExplainRequest()));
        Assert.Equal("texts[1]", ex.Field);
    }

    [Fact]
    public void LabelsAndIndicesAreAccepted()
    {
        Assert.Equal(2, Explainer.ResolveTarget("LABEL_2", 3));
        Assert.Equal(1, Explainer.ResolveTarget("label_1", 3));
        Assert.Equal(0, Explainer.ResolveTarget("0", 3));
    }

    /// <summary>The low-level API checks too: steps, targets, reference counts.</summary>
    [Fact]
    public void LowLevelApiChecksItsInputs()
    {
        var model = fixture.Models["std1"].Float32;
        var ids = TorchSharp.torch.tensor(new long[,] { { 101, 200, 201, 102 } });
        var mask = TorchSharp.torch.ones_like(ids);
        var reference = model.WordEmbeddings(TorchSharp.torch.tensor(new long[,] { { 101, 0, 0, 102 } }));
        AttributionBatch Batch(long target, int refs = 1) => new(ids, mask, Enumerable.Repeat(reference, refs).ToList(), new[] { target });

        Assert.Equal("steps", Assert.Throws<AttributionRequestException>(() =>
            new IntegratedGradients().Attribute(model, Batch(0), new MethodOptions { Steps = 0 })).Field);
        foreach (var method in AttributionMethods.Names)
        {
            Assert.Equal("target", Assert.Throws<AttributionRequestException>(() =>
                AttributionMethods.Create(method).Attribute(model, Batch(3), new MethodOptions { Steps = 2, Samples = 1 })).Field);
            Assert.Equal("target", Assert.Throws<AttributionRequestException>(() =>
                AttributionMethods.Create(method).Attribute(model, Batch(-1), new MethodOptions { Steps = 2, Samples = 1 })).Field);
            Assert.Equal("reference", Assert.Throws<AttributionRequestException>(() =>
                AttributionMethods.Create(method).Attribute(model, Batch(0, refs: 0), new MethodOptions { Steps = 2, Samples = 1 })).Field);
        }
        Assert.Equal("reference", Assert.Throws<AttributionRequestException>(() =>
            new DeepLift().Attribute(model, Batch(0, refs: 2), new MethodOptions())).Field);
        Assert.Equal("method", Assert.Throws<AttributionRequestException>(() => AttributionMethods.Create("occlusion")).Field);
    }
}
