using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Models;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Architectures;

/// <summary>The exactness checks every family's fixtures go through (DeBERTa-v2, its second reference, ModernBERT).</summary>
internal static class FixtureExactness
{
    /// <summary>Each fixture with every output kind, in float64 and float32.</summary>
    public static TheoryData<string, OutputKind, Precision> Cases(params string[] fixtures)
    {
        var data = new TheoryData<string, OutputKind, Precision>();
        foreach (var f in fixtures)
            foreach (var o in new[] { OutputKind.Logit, OutputKind.CenteredLogit, OutputKind.Probability })
                foreach (var p in new[] { Precision.Float64, Precision.Float32 })
                    data.Add(f, o, p);
        return data;
    }

    /// <summary>
    /// DeepLift on the fixture's padded batch against the [PAD] reference: float64 max relative delta ≤ 1e-10, float32
    /// |delta| ≤ 1e-4 · max(|f(x)|, |f(x0)|), scores not all zero, padded positions exactly 0. <paramref name="targets"/>
    /// (model, texts → one target per text): the last output for every text unless given.
    /// </summary>
    public static void DeepLiftIsExactOnPaddedBatch(string fixture, OutputKind kind, Precision precision, ITestOutputHelper output,
        Func<ITextModel, int, long[]>? targets = null)
    {
        var dtype = precision == Precision.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var (ids, mask, _, _) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: dtype);
        var reference = ArchitectureTests.ReferenceIds(ids, mask, model.Config);
        int n = (int)ids.shape[0];
        var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(reference) },
            targets?.Invoke(model, n) ?? Enumerable.Repeat((long)model.OutputSize - 1, n).ToArray());
        var result = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind });

        double delta = result.Delta.abs().max().item<double>();
        double scale = maximum(result.Fx.abs(), result.Fx0.abs()).max().item<double>();
        double change = (result.Fx - result.Fx0).abs().min().item<double>();
        double relative = (result.Delta.abs() / (result.Fx - result.Fx0).abs()).max().item<double>();
        double scores = result.Scores.abs().max().item<double>();
        output.WriteLine($"{fixture} {kind} {precision}: max|delta| {delta:E2}, max relative delta {relative:E2}, min|f(x)−f(x0)| {change:E2}, max|score| {scores:E2}");
        Assert.True(change > 1e-4, "the test needs f(x) != f(x0)");
        Assert.True(scores > 1e-4, "scores should not be all zero");
        if (precision == Precision.Float64) Assert.True(relative <= 1e-10, $"relative delta {relative:E2}");
        else Assert.True(delta <= 1e-4 * scale, $"|delta| {delta:E2} > 1e-4 × {scale:E2}");
        Assert.Equal(0.0, result.Scores.masked_select(mask.logical_not()).abs().max().item<double>());
    }

    /// <summary>
    /// One reference row shared by a padded batch (each text's ids replaced by the pad id, the same for all): exact,
    /// and the same scores as the reference expanded to a row per text.
    /// </summary>
    public static void SharedReferenceRowOnPaddedBatchIsExact(string fixture, ITestOutputHelper output)
    {
        var (ids, mask, _, _) = ArchitectureFixtures.Case(fixture);
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        var refIds = full(1, ids.shape[1], (long)model.Config.PadTokenId, dtype: ScalarType.Int64);
        var reference = model.WordEmbeddings(refIds);
        var targets = Enumerable.Repeat(0L, (int)ids.shape[0]).ToArray();
        var options = new MethodOptions { Output = OutputKind.Logit };
        var shared = new DeepLift().Attribute(model, new AttributionBatch(ids, mask, new[] { reference }, targets), options);
        var own = new DeepLift().Attribute(model, new AttributionBatch(ids, mask, new[] { reference.expand(ids.shape[0], -1, -1).contiguous() }, targets), options);
        double relative = (shared.Delta.abs() / (shared.Fx - shared.Fx0).abs()).max().item<double>();
        double apart = (shared.Scores - own.Scores).abs().max().item<double>();
        output.WriteLine($"{fixture}: shared reference row, max relative delta {relative:E2}, max |scores − per-text reference scores| {apart:E2}");
        Assert.True(relative <= 1e-10, $"relative delta {relative:E2}");
        Assert.True(apart <= 1e-12, $"scores differ by {apart:E2}");
    }
}
