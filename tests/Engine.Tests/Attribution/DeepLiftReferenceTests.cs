using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Rules;
using AttributionFleet.Engine.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>Exact DeepLift on the reference checkpoints: summation-to-delta at rounding level.</summary>
public class DeepLiftReferenceTests(ITestOutputHelper output)
{
    public static TheoryData<string, string, OutputKind, Precision> Cases()
    {
        var data = new TheoryData<string, string, OutputKind, Precision>();
        foreach (var (folder, mask) in new[] { ("tiny-bert-L2", ""), ("tiny-bert-stress", "attention_mask"), ("tiny-distilbert/stress", "attention_mask"), ("tiny-roberta/stress", "attention_mask") })
            foreach (var o in new[] { OutputKind.Logit, OutputKind.CenteredLogit, OutputKind.Probability })
                foreach (var p in new[] { Precision.Float64, Precision.Float32 })
                    data.Add(folder, mask, o, p);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SummationToDeltaHolds(string folder, string maskField, OutputKind kind, Precision precision)
    {
        var c = RepoPaths.LoadCase(folder);
        var dtype = precision == Precision.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        using var model = ModelLoader.Load(RepoPaths.Reference(folder), dtype: dtype);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = maskField == "" ? ones_like(ids) : tensor(Json.Long2(c.GetProperty(maskField)));
        var refIds = ReferenceIds(ids, model);
        var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(refIds) }, Enumerable.Repeat(1L, (int)ids.shape[0]).ToArray());
        var result = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind });

        var delta = result.Delta.abs().max().item<double>();
        var scale = maximum(result.Fx.abs(), result.Fx0.abs()).max().item<double>();
        var change = (result.Fx - result.Fx0).abs().min().item<double>();
        output.WriteLine($"{folder} {kind} {precision}: max|delta| {delta:E2}, scale {scale:E2}, min|f(x)-f(x0)| {change:E2}");
        Assert.True(change > 0, "the test needs f(x) != f(x0)");
        if (precision == Precision.Float64)
            Assert.True(delta / change <= 1e-10, $"relative delta {delta / change:E2}");
        else
            Assert.True(delta <= 1e-4 * scale, $"|delta| {delta:E2} > 1e-4 × {scale:E2}");

        // Padded positions score exactly 0 (input equals reference there).
        var padded = mask.logical_not();
        if (padded.any().item<bool>())
            Assert.Equal(0.0, result.Scores.masked_select(padded).abs().max().item<double>());
    }

    /// <summary>Captum's DeepLift on the same inputs has far larger deltas than ours (README of tests/fixtures/reference).</summary>
    [Theory]
    [InlineData("tiny-bert-L1")]
    [InlineData("tiny-bert-L2")]
    public void OursAtRoundingWhereCaptumIsNot(string folder)
    {
        var c = RepoPaths.LoadCase(folder);
        using var model = ModelLoader.Load(RepoPaths.Reference(folder));
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var refIds = tensor(Json.Long2(c.GetProperty("baseline_ids")));
        long target = c.GetProperty("target").GetInt64();
        var batch = new AttributionBatch(ids, ones_like(ids), new[] { model.WordEmbeddings(refIds) }, Enumerable.Repeat(target, (int)ids.shape[0]).ToArray());
        var ours = new DeepLift().Attribute(model, batch, new MethodOptions { Output = OutputKind.Logit });
        double oursMax = ours.Delta.abs().max().item<double>();
        var contrast = c.GetProperty("captum_deeplift_for_contrast");
        double captumMax = new[] { "captum", "rowfix" }.Max(k => Json.Double1(contrast.GetProperty(k).GetProperty("delta")).Max(Math.Abs));
        output.WriteLine($"{folder}: ours max|delta| {oursMax:E2}; Captum (captum/rowfix rules) {captumMax:E2}");
        Assert.True(oursMax < 1e-6, $"ours {oursMax:E2}");
        Assert.True(captumMax > 100 * oursMax);
    }

    internal static Tensor ReferenceIds(Tensor ids, ITextModel model)
    {
        // Every token but the start/end specials becomes [PAD] (<pad> for RoBERTa); padding stays padding.
        long pad = model.Config.PadTokenId;
        var (start, end) = model.Config.Positions == Checkpoints.PositionScheme.AfterPadding ? (0L, 2L) : (101L, 102L);
        var keep = (ids == start).logical_or(ids == end);
        return where(keep, ids, full_like(ids, pad));
    }
}

public class DeepLiftPassSizeTests
{
    /// <summary>Splitting a batch into smaller passes (to bound memory) gives the same attributions.</summary>
    [Fact]
    public void SmallerPassesGiveTheSameResult()
    {
        var c = RepoPaths.LoadCase("tiny-bert-stress");
        using var model = ModelLoader.Load(RepoPaths.Reference("tiny-bert-stress"), dtype: ScalarType.Float64);
        var ids = tensor(Json.Long2(c.GetProperty("input_ids")));
        var mask = tensor(Json.Long2(c.GetProperty("attention_mask")));
        var refIds = DeepLiftReferenceTests.ReferenceIds(ids, model);
        var targets = new long[] { 0, 1, 2, 1 };
        foreach (var reference in new[] { model.WordEmbeddings(refIds), model.WordEmbeddings(refIds[..1]) })
        {
            var batch = new AttributionBatch(ids, mask, new[] { reference }, targets);
            var whole = new DeepLift().Attribute(model, batch, new MethodOptions());
            foreach (var options in new[] { new MethodOptions { MaxRowsPerPass = 3 }, new MethodOptions { PassMemoryBytes = 1 } })
            {
                var split = new DeepLift().Attribute(model, batch, options);
                Assert.Equal(whole.Scores.shape, split.Scores.shape);
                Assert.True((whole.Scores - split.Scores).abs().max().item<double>() < 1e-12);
                Assert.True((whole.Delta - split.Delta).abs().max().item<double>() < 1e-12);
                Assert.True((whole.Fx0 - split.Fx0).abs().max().item<double>() < 1e-12);
            }
        }
    }

    /// <summary>The pass size follows the memory budget and the length, is capped, and is evened out over a batch.</summary>
    [Fact]
    public void PassSizeFollowsTheMemoryBudget()
    {
        var bertBase = AttributionFleet.Engine.Models.RandomModels.BertBase();
        var options = new MethodOptions(); // 1 GiB
        long at128 = DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float32, options);
        long at32 = DeepLift.TextsPerPass(bertBase, 32, ScalarType.Float32, options);
        Assert.Equal(9, at128);                                   // 1 GiB / ~107 MB a text
        Assert.True(at32 > 4 * at128, $"{at32} texts of 32 tokens vs {at128} of 128");
        Assert.Equal(8, DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float32, options, batchSize: 16)); // 8 + 8, not 9 + 7
        Assert.Equal(5, DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float32, options, batchSize: 5));
        Assert.Equal(4, DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float64, options));       // twice the bytes
        Assert.Equal(1, DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float32, new MethodOptions { PassMemoryBytes = 1 }));
        Assert.Equal(2, DeepLift.TextsPerPass(bertBase, 32, ScalarType.Float32, new MethodOptions { MaxRowsPerPass = 2 }));
        Assert.Equal(64, DeepLift.TextsPerPass(bertBase, 128, ScalarType.Float32, options, device: TorchSharp.DeviceType.CUDA)); // capped by MaxRowsPerPass
    }
}
