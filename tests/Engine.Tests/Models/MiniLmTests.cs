using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Tests.Support;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Models;

/// <summary>The real pretrained MiniLM encoder: forward parity with ONNX Runtime, exact DeepLift on real weights.</summary>
public class MiniLmTests(ITestOutputHelper output)
{
    public static readonly string[] Sentences =
    {
        "The plot was dull but the acting was wonderful.",
        "Terrible.",
        "I would not recommend this restaurant to anyone, the food was cold and the service was slow.",
        "An absolute masterpiece of modern cinema!",
        "Not bad at all, actually quite good.",
        "The battery lasts two days; the screen is bright, sharp and easy to read outdoors, though the speakers are weak.",
        "Meh.",
        "Customer support answered within minutes and solved my problem politely.",
    };

    /// <summary>A padded batch of the sentences: ids, mask (long), the lengths.</summary>
    internal static (long[,] Ids, long[,] Mask, int[] Lengths) Batch(ITextTokenizer tokenizer, IReadOnlyList<string> texts)
    {
        var encoded = texts.Select(t => tokenizer.Encode(t, 128).Ids).ToList();
        int max = encoded.Max(e => e.Length);
        var ids = new long[texts.Count, max];
        var mask = new long[texts.Count, max];
        for (int i = 0; i < encoded.Count; i++)
            for (int j = 0; j < encoded[i].Length; j++)
            {
                ids[i, j] = encoded[i][j];
                mask[i, j] = 1;
            }
        return (ids, mask, encoded.Select(e => e.Length).ToArray());
    }

    [Fact]
    public void ForwardMatchesOnnxRuntimeOnAPaddedBatch()
    {
        using var loaded = LoadedModel.Load(MiniLmModel.ImportedDir, CPU);
        var (ids, mask, lengths) = Batch(loaded.Tokenizer, Sentences);
        Assert.True(lengths.Distinct().Count() >= 6, "sentences of different lengths");
        var expected = OnnxReference.LastHiddenState(MiniLmModel.OnnxPath, ids, mask, new long[ids.GetLength(0), ids.GetLength(1)]);
        Tensor hidden;
        using (no_grad())
            hidden = loaded.Float32.Encode(PlainOps.Instance, new Act(loaded.Float32.WordEmbeddings(tensor(ids))), tensor(mask)).X;
        double maxDiff = 0;
        var ours = hidden.data<float>().ToArray();
        int l = ids.GetLength(1), h = (int)hidden.shape[2];
        for (int b = 0; b < lengths.Length; b++)
            for (int t = 0; t < lengths[b]; t++)
                for (int k = 0; k < h; k++)
                    maxDiff = Math.Max(maxDiff, Math.Abs(ours[(b * l + t) * h + k] - expected[b, t, k]));
        output.WriteLine($"max |last_hidden_state - ONNX Runtime| at real tokens: {maxDiff:E2}");
        Assert.True(maxDiff <= 1e-4, $"max diff {maxDiff:E3}");
    }

    /// <summary>A classification head on the mean-pooled real encoder (random, but large enough to give logits of order 1).</summary>
    internal static ITextModel WithRandomHead(ITextModel encoder, int labels = 3, long seed = 7)
    {
        var gen = new Generator((ulong)seed);
        var w = randn(new long[] { labels, encoder.Config.HiddenSize }, generator: gen) * 2.0;
        var b = randn(new long[] { labels }, generator: gen) * 0.1;
        return encoder.WithClassifier(w, b, Enumerable.Range(0, labels).Select(i => $"LABEL_{i}").ToList());
    }

    [Theory]
    [InlineData(OutputKind.Logit)]
    [InlineData(OutputKind.CenteredLogit)]
    [InlineData(OutputKind.Probability)]
    public void DeepLiftIsExactOnRealWeights(OutputKind kind)
    {
        using var loaded = LoadedModel.Load(MiniLmModel.ImportedDir, CPU);
        var (idArray, maskArray, _) = Batch(loaded.Tokenizer, Sentences);
        var ids = tensor(idArray);
        var mask = tensor(maskArray);
        var refIds = where(ids == 101L, ids, where(ids == 102L, ids, zeros_like(ids)));
        foreach (var precision in new[] { ScalarType.Float64, ScalarType.Float32 })
        {
            var encoder = precision == ScalarType.Float64 ? loaded.For(Precision.Float64) : loaded.Float32;
            var model = WithRandomHead(encoder);
            var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(refIds) }, new long[] { 0, 1, 2, 0, 1, 2, 0, 1 });
            var r = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind });
            var rel = (r.Delta.abs() / (r.Fx - r.Fx0).abs()).max().item<double>();
            var abs = r.Delta.abs().max().item<double>();
            var scale = maximum(r.Fx.abs(), r.Fx0.abs()).max().item<double>();
            output.WriteLine($"MiniLM {kind} {precision}: max relative delta {rel:E2}, max |delta| {abs:E2} (scale {scale:E2})");
            Assert.True(r.Delta.isfinite().all().item<bool>());
            if (precision == ScalarType.Float64) Assert.True(rel <= 1e-10, $"relative delta {rel:E2}");
            else Assert.True(abs <= 1e-4 * scale, $"|delta| {abs:E2}");
            Assert.Equal(0.0, r.Scores.masked_select(mask == 0).abs().max().item<double>());
        }
    }
}

public class MiniLmPrecisionTests(ITestOutputHelper output)
{
    /// <summary>
    /// Float32 token scores against a float64 run of the same model (design note: with multipliers computed in
    /// float64 where a rule divides a difference by a difference, the float32 scores land within ~1e-7 of float64).
    /// </summary>
    [Fact]
    public void Float32ScoresTrackFloat64()
    {
        using var loaded = LoadedModel.Load(MiniLmModel.ImportedDir, CPU);
        var (idArray, maskArray, _) = MiniLmTests.Batch(loaded.Tokenizer, MiniLmTests.Sentences);
        var ids = tensor(idArray);
        var mask = tensor(maskArray);
        var refIds = where(ids == 101L, ids, where(ids == 102L, ids, zeros_like(ids)));
        var targets = new long[] { 0, 1, 2, 0, 1, 2, 0, 1 };
        Tensor Scores(ITextModel encoder, bool promote)
        {
            var model = MiniLmTests.WithRandomHead(encoder);
            var batch = new AttributionBatch(ids, mask, new[] { model.WordEmbeddings(refIds) }, targets);
            return new DeepLift().Attribute(model, batch, new MethodOptions { Output = OutputKind.Logit, PromoteMultipliers = promote }).Scores;
        }
        var reference = Scores(loaded.For(Precision.Float64), true);
        double scale = reference.abs().max().item<double>();
        var promoted = (Scores(loaded.Float32, true) - reference).abs().max().item<double>() / scale;
        var plain = (Scores(loaded.Float32, false) - reference).abs().max().item<double>() / scale;
        output.WriteLine($"float32 token scores vs float64, relative to the largest score: promoted {promoted:E2}, not promoted {plain:E2}");
        Assert.True(promoted <= 1e-5, $"promoted {promoted:E2}");
        Assert.True(promoted <= plain, "promotion should not make the scores worse");
    }
}
