using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Tests.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>Two tiny random BERTs written to a temp folder (a [CLS]-pooler head and a mean-pooling head, as MiniLM).</summary>
public sealed class BatchingModels : IDisposable
{
    public static readonly string[] Words =
        { "the", "movie", "was", "great", "bad", "not", "a", "film", "good", "plot", "!", "?", ".", ",", "very", "boring" };

    private readonly string _root = Path.Combine(Path.GetTempPath(), "batching-models-" + Guid.NewGuid().ToString("N"));
    public Dictionary<string, LoadedModel> Models { get; } = new();

    public BatchingModels()
    {
        foreach (var architecture in new[] { "BertForSequenceClassification", "MeanPoolingClassifier" })
        {
            var config = RandomModels.BertConfig(layers: 2, hidden: 16, heads: 2, intermediate: 32, vocab: 1000, labels: 3, maxPositions: 64,
                architecture: architecture);
            var dir = Path.Combine(_root, architecture);
            Directory.CreateDirectory(dir);
            File.WriteAllLines(Path.Combine(dir, "vocab.txt"), Enumerable.Range(0, config.VocabSize).Select(i => i switch
            {
                0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
                >= 200 and < 216 => Words[i - 200],
                _ => $"[unused{i}]",
            }));
            using (var model = RandomModels.Create(config, seed: 5, std: 0.5, stress: true)) RandomModels.Save(model, dir);
            Models[architecture] = LoadedModel.Load(dir, CPU);
        }
    }

    /// <summary>Texts of <paramref name="words"/> words each (two specials added: lengths words + 2).</summary>
    public static List<string> Texts(params int[] words) =>
        words.Select((n, t) => string.Join(" ", Enumerable.Range(0, n).Select(i => Words[(i * 7 + t * 3) % Words.Length]))).ToList();

    public void Dispose()
    {
        foreach (var m in Models.Values) m.Dispose();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// The checkpoints of tests/fixtures/architectures, one per family and head the seam has, loaded on first use: ELECTRA,
/// DeBERTa-v2 (relative positions, its own masks), XLM-R and RoBERTa (positions counted from the mask), DistilBERT
/// (imported from its ONNX export, as RoBERTa), and BERT with a multi-label and a regression head.
/// </summary>
public sealed class ArchitectureModels : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("af-mixed-arch-").FullName;
    private readonly Dictionary<string, LoadedModel> _models = new();

    public LoadedModel this[string fixture]
    {
        get
        {
            lock (_models)
            {
                if (_models.TryGetValue(fixture, out var loaded)) return loaded;
                string folder = ArchitectureFixtures.Folder(fixture);
                if (fixture.StartsWith("onnx-", StringComparison.Ordinal))
                {
                    string vocab = File.Exists(Path.Combine(folder, "vocab.json")) ? "vocab.json" : "vocab.txt";
                    string outDir = Path.Combine(_root, fixture);
                    Engine.Onnx.OnnxBertImporter.Import(Path.Combine(folder, "model.onnx"), Path.Combine(folder, vocab), outDir);
                    folder = outDir;
                }
                return _models[fixture] = LoadedModel.Load(folder, CPU);
            }
        }
    }

    public void Dispose()
    {
        foreach (var m in _models.Values) m.Dispose();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// Texts of several lengths in one padded DeepLift batch: each gets the scores it gets alone (float64, 1e-12), padded
/// positions score exactly 0, the reference half is one row per distinct length, and a cached reference gives
/// bit-identical results.
/// </summary>
public class MixedLengthBatchTests(BatchingModels fixture, ArchitectureModels architectures, ITestOutputHelper output)
    : IClassFixture<BatchingModels>, IClassFixture<ArchitectureModels>
{
    /// <summary>Every text in one batch: the pass overhead outweighs any padding.</summary>
    private static readonly BucketCostModel OneBatch = new() { PassOverheadRows = 1e6 };

    private static readonly int[] Words = { 10, 7, 10, 4, 7, 7, 1, 12 };

    [Theory]
    [InlineData("BertForSequenceClassification", "centered-logit")]
    [InlineData("BertForSequenceClassification", "probability")]
    [InlineData("MeanPoolingClassifier", "logit")]
    [InlineData("MeanPoolingClassifier", "centered-logit")]
    public void MixedLengthBatchEqualsEachTextAlone(string architecture, string outputKind)
    {
        var loaded = fixture.Models[architecture];
        var explainer = new TextExplainer(loaded) { CostModel = OneBatch };
        var texts = BatchingModels.Texts(Words);
        var request = new ExplainRequest { Precision = "float64", Output = outputKind, BatchSize = 16, ReferenceCacheMB = 0 };
        var mixed = explainer.Explain(texts, request);
        Assert.Equal(1, explainer.BatchCounts.Batches);
        var model = loaded.For(Precision.Float64);
        var options = new MethodOptions { Output = request.ParseOutput(), ReferenceCache = null };
        double worst = 0;
        for (int i = 0; i < texts.Count; i++)
        {
            // Alone: the engine's plain path, the reference carried through the pass (no groups, no tape).
            var t = explainer.Tokenize(new[] { texts[i] })[0];
            var ids = tensor(t.Ids.Select(x => (long)x).ToArray()).unsqueeze(0);
            var alone = new DeepLift().Attribute(model, new AttributionBatch(ids, ones_like(ids),
                new[] { explainer.ReferenceEmbeddings("pad", t.Ids.Length, model) }, new long[] { mixed[i].TargetIndex }), options);
            var scores = alone.Scores[0].data<double>().ToArray();
            double scale = Math.Max(1, scores.Max(Math.Abs));
            Assert.Equal(scores.Length, mixed[i].Scores.Length);
            double diff = scores.Zip(mixed[i].Scores, (a, b) => Math.Abs(a - b)).Max();
            worst = Math.Max(worst, diff / scale);
            Assert.True(diff <= 1e-12 * scale, $"text {i} ({t.Ids.Length} tokens): max |mixed − alone| = {diff:E2}");
            Assert.True(Math.Abs(mixed[i].Fx0 - alone.Fx0[0].item<double>()) <= 1e-12 * Math.Max(1, Math.Abs(mixed[i].Fx0)), $"text {i}: f(x0)");
            Assert.True(Math.Abs(mixed[i].Fx - alone.Fx[0].item<double>()) <= 1e-12 * Math.Max(1, Math.Abs(mixed[i].Fx)), $"text {i}: f(x)");
            Assert.True(Math.Abs(mixed[i].Delta) <= 1e-10, $"text {i}: delta {mixed[i].Delta:E2}");
        }
        output.WriteLine($"{architecture} {outputKind}: max |mixed − alone| / max(1, |scores|) = {worst:E2}");
    }

    /// <summary>
    /// The position-wise layers on the real tokens only (<see cref="TokenPacking"/>) or on the padded batch: the same
    /// scores (float64, 1e-12; float32 to its rounding), f(x), f(x0) and deltas; the packed run packs, the other does not.
    /// </summary>
    [Theory]
    [InlineData("float64", 1e-12)]
    [InlineData("float32", 1e-5)]
    public void PackedAndPaddedLayoutsGiveTheSameExplanations(string precision, double tolerance)
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var texts = BatchingModels.Texts(Words);
        var request = new ExplainRequest { Precision = precision, BatchSize = 16, ReferenceCacheMB = 0 };
        long passes = TokenPacking.Passes;
        var packed = new TextExplainer(loaded) { CostModel = OneBatch }.Explain(texts, request);
        Assert.Equal(passes + 1, TokenPacking.Passes);
        IReadOnlyList<Explanation> padded;
        TokenPacking.Enabled = false;
        try { padded = new TextExplainer(loaded) { CostModel = OneBatch }.Explain(texts, request); }
        finally { TokenPacking.Enabled = true; }
        Assert.Equal(passes + 1, TokenPacking.Passes);
        for (int i = 0; i < texts.Count; i++)
        {
            double scale = Math.Max(1e-3, padded[i].Scores.Max(Math.Abs));
            double diff = padded[i].Scores.Zip(packed[i].Scores, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff <= tolerance * scale, $"text {i}: max |packed − padded| = {diff:E2} (largest {scale:E2})");
            Assert.True(Math.Abs(packed[i].Fx - padded[i].Fx) <= tolerance * Math.Max(1, Math.Abs(padded[i].Fx)), $"text {i}: f(x)");
            Assert.True(Math.Abs(packed[i].Fx0 - padded[i].Fx0) <= tolerance * Math.Max(1, Math.Abs(padded[i].Fx0)), $"text {i}: f(x0)");
            Assert.True(Math.Abs(packed[i].Delta) <= tolerance * Math.Max(1, Math.Abs(packed[i].Fx - packed[i].Fx0)), $"text {i}: delta {packed[i].Delta:E2}");
        }
    }

    /// <summary>
    /// The same in float32, where the fused CPU loops take the batch's reference rows with a row map (GELU's secant, and
    /// the exact softmax on CPUs with AVX-512): each text's scores equal its scores alone to float32 rounding (1e-5 of the
    /// largest), with deltas at rounding level, and the grouped loops are the path that ran.
    /// </summary>
    [Fact]
    public void Float32MixedLengthBatchEqualsEachTextAloneThroughTheGroupedLoops()
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var explainer = new TextExplainer(loaded) { CostModel = OneBatch };
        var texts = BatchingModels.Texts(Words);
        var request = new ExplainRequest { Precision = "float32", BatchSize = 16, ReferenceCacheMB = 0 };
        long grouped = Engine.Rules.CpuKernels.GroupedRuns, packed = Engine.Rules.CpuKernels.PackedRuns, packedPasses = TokenPacking.Passes;
        var mixed = explainer.Explain(texts, request);
        Assert.Equal(1, explainer.BatchCounts.Batches);
        // Two layers: at least the two GELUs read each group's tape (and the two softmaxes with AVX-512), the GELUs on the
        // packed tokens of the one pass.
        Assert.True(Engine.Rules.CpuKernels.GroupedRuns - grouped >= 2, $"{Engine.Rules.CpuKernels.GroupedRuns - grouped} grouped kernel runs");
        Assert.Equal(packedPasses + 1, TokenPacking.Passes);
        Assert.True(Engine.Rules.CpuKernels.PackedRuns - packed >= 2, $"{Engine.Rules.CpuKernels.PackedRuns - packed} packed kernel runs");
        double worst = 0;
        for (int i = 0; i < texts.Count; i++)
        {
            var alone = new TextExplainer(loaded).Explain(new[] { texts[i] }, request with { Target = mixed[i].TargetIndex.ToString() })[0];
            double scale = Math.Max(1e-3, alone.Scores.Max(Math.Abs));
            double diff = alone.Scores.Zip(mixed[i].Scores, (a, b) => Math.Abs(a - b)).Max();
            worst = Math.Max(worst, diff / scale);
            Assert.True(diff <= 1e-5 * scale, $"text {i}: max |mixed − alone| = {diff:E2} (largest {scale:E2})");
            Assert.True(Math.Abs(mixed[i].Delta) <= 1e-5 * Math.Max(1, Math.Abs(mixed[i].Fx - mixed[i].Fx0)), $"text {i}: delta {mixed[i].Delta:E2}");
        }
        output.WriteLine($"float32: max |mixed − alone| / largest score = {worst:E2}");
    }

    /// <summary>Sentences of 9, 6, 9, 3, 6, 6, 1 and 11 words: repeated and distinct token lengths under any tokenizer.</summary>
    private static readonly string[] Sentences =
    {
        "the plot was dull but the acting was wonderful",
        "a very boring film , sadly",
        "the plot was dull but the acting was wonderful",
        "not good !",
        "what a great movie it was",
        "a very boring film , sadly",
        "wonderful",
        "i would not watch it again , the ending was bad",
    };

    public static TheoryData<string, string> FixtureCases() => new()
    {
        { "electra", "centered-logit" },
        { "deberta-v2", "centered-logit" },
        { "deberta-v2", "probability" },
        { "deberta-v3", "centered-logit" },
        { "modernbert", "centered-logit" },
        { "modernbert", "probability" },
        { "xlm-roberta", "centered-logit" },
        { "onnx-roberta", "probability" },
        { "onnx-distilbert", "centered-logit" },
        { "bert-multi-label", "logit" },
        { "bert-multi-label", "probability" },
        { "bert-regression", "logit" },
    };

    /// <summary>
    /// Every architecture and head on the seam: a mixed-length padded batch gives each text what it gets alone
    /// (float64, 1e-12; predictions and probabilities as the head means them), a cached reference is bit-identical to an
    /// uncached one, and a replayed tape to the reference carried through the pass.
    /// </summary>
    [Theory]
    [MemberData(nameof(FixtureCases))]
    public void EveryArchitectureMixedLengthBatchEqualsEachTextAlone(string name, string outputKind)
    {
        var loaded = architectures[name];
        var explainer = new TextExplainer(loaded) { CostModel = OneBatch };
        var texts = Sentences.ToList();
        var tokenized = explainer.Tokenize(texts);
        int distinct = tokenized.Select(t => t.Ids.Length).Distinct().Count();
        Assert.True(distinct >= 3, $"{name}: only {distinct} distinct lengths");
        var request = new ExplainRequest { Precision = "float64", Output = outputKind, BatchSize = 16, ReferenceCacheMB = 0 };
        var mixed = explainer.Explain(texts, request);
        Assert.Equal(1, explainer.BatchCounts.Batches);
        double worst = 0;
        for (int i = 0; i < texts.Count; i++)
        {
            var alone = new TextExplainer(loaded).Explain(new[] { texts[i] }, request with { Target = mixed[i].TargetIndex.ToString() })[0];
            Assert.Equal(alone.Scores.Length, mixed[i].Scores.Length);
            Assert.Equal(alone.Output, mixed[i].Output);
            double scale = Math.Max(1, alone.Scores.Max(Math.Abs));
            double diff = alone.Scores.Zip(mixed[i].Scores, (a, b) => Math.Abs(a - b)).Max();
            worst = Math.Max(worst, diff / scale);
            Assert.True(diff <= 1e-12 * scale, $"{name} text {i} ({tokenized[i].Ids.Length} tokens): max |mixed − alone| = {diff:E2}");
            Assert.True(Math.Abs(mixed[i].Fx - alone.Fx) <= 1e-12 * Math.Max(1, Math.Abs(alone.Fx)), $"{name} text {i}: f(x)");
            Assert.True(Math.Abs(mixed[i].Fx0 - alone.Fx0) <= 1e-12 * Math.Max(1, Math.Abs(alone.Fx0)), $"{name} text {i}: f(x0)");
            Assert.True(Math.Abs(mixed[i].Delta) <= 1e-10, $"{name} text {i}: delta {mixed[i].Delta:E2}");
            Assert.Equal(alone.Prediction.Head, mixed[i].Prediction.Head);
            Assert.Equal(alone.Prediction.Index, mixed[i].Prediction.Index);
            if (double.IsNaN(alone.Prediction.Probability)) Assert.True(double.IsNaN(mixed[i].Prediction.Probability));
            else Assert.True(Math.Abs(alone.Prediction.Probability - mixed[i].Prediction.Probability) <= 1e-12, $"{name} text {i}: probability");
            if (alone.Prediction.Value is double value)
                Assert.True(Math.Abs(value - mixed[i].Prediction.Value!.Value) <= 1e-12 * Math.Max(1, Math.Abs(value)), $"{name} text {i}: value");
        }
        output.WriteLine($"{name} {outputKind}: {distinct} lengths, max |mixed − alone| / max(1, |scores|) = {worst:E2}");

        // Cached: a private cache (the first pass records every length, the second replays them all), bit-identical.
        var model = loaded.For(Precision.Float64);
        var (kind, _) = HeadOutputs.Resolve(model.Problem, request.ParseOutput(), outputKind);
        var items = tokenized.OrderByDescending(t => t.Ids.Length).ToList();
        var batch = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        var uncached = new DeepLift().Attribute(model, batch, new MethodOptions { Output = kind, ReferenceCache = null });
        var cache = new ReferenceCache(1L << 30);
        var cachedOptions = new MethodOptions { Output = kind, ReferenceCache = cache };
        foreach (int run in new[] { 1, 2 })
        {
            var cached = new DeepLift().Attribute(model, batch, cachedOptions);
            Assert.Equal(uncached.Scores.data<double>().ToArray(), cached.Scores.data<double>().ToArray());
            Assert.Equal(uncached.Fx0.data<double>().ToArray(), cached.Fx0.data<double>().ToArray());
            Assert.Equal(uncached.Delta.data<double>().ToArray(), cached.Delta.data<double>().ToArray());
        }
        Assert.Equal(distinct, cache.Misses);
        Assert.Equal(distinct, cache.Hits);

        // One length: the tape replayed (a hit) against the reference carried through the pass (no tape), bit-identical.
        var same = explainer.Tokenize(Enumerable.Repeat(texts[0], 3).ToList());
        var one = explainer.PaddedBatch(same, new[] { "pad" }, model, null);
        var oneCache = new ReferenceCache(1L << 30);
        new DeepLift().Attribute(model, one, new MethodOptions { Output = kind, ReferenceCache = oneCache });
        var replayed = new DeepLift().Attribute(model, one, new MethodOptions { Output = kind, ReferenceCache = oneCache });
        Assert.Equal(1, oneCache.Hits);
        var carried = new DeepLift().Attribute(model, one with { Groups = null }, new MethodOptions { Output = kind, ReferenceCache = null });
        Assert.Equal(carried.Scores.data<double>().ToArray(), replayed.Scores.data<double>().ToArray());
        Assert.Equal(carried.Fx0.data<double>().ToArray(), replayed.Fx0.data<double>().ToArray());
    }

    /// <summary>
    /// A tape is recorded either while a pass carries the reference beside its texts, or by a pass of the reference alone
    /// (the missing lengths of a mixed batch: ops and rules then compute only the reference half). Both hold the same
    /// activations, bit for bit, on every family's ops (rotary, sliding-window, disentangled attention, GeGLU included),
    /// in float32 (the promoted rules, the fused CPU loop) and float64.
    /// </summary>
    [Theory]
    [InlineData("electra")]
    [InlineData("deberta-v2")]
    [InlineData("deberta-v3")]
    [InlineData("modernbert")]
    [InlineData("xlm-roberta")]
    [InlineData("bert-multi-label")]
    public void ATapeRecordedFromTheReferenceAloneIsBitIdenticalToOneRecordedWhileCarryingIt(string name)
    {
        var loaded = architectures[name];
        var explainer = new TextExplainer(loaded);
        foreach (var precision in new[] { Precision.Float32, Precision.Float64 })
        {
            var model = loaded.For(precision);
            var one = explainer.PaddedBatch(explainer.Tokenize(Enumerable.Repeat(Sentences[0], 3).ToList()), new[] { "pad" }, model, null);
            var cache = new ReferenceCache(1L << 30);
            new DeepLift().Attribute(model, one, new MethodOptions { ReferenceCache = cache });
            var carried = Assert.Single(cache.Tapes);
            using var alone = ReferenceTape.Record(model, one.ReferenceEmbeddings[0], one.Groups!.Masks, new DeepLiftOps());
            Assert.Equal(carried.Steps, alone.Steps);
            var a = carried.Activations.ToList();
            var b = alone.Activations.ToList();
            Assert.Equal(a.Count, b.Count);
            for (int i = 0; i < a.Count; i++)
            {
                Assert.Equal(a[i].shape, b[i].shape);
                Assert.True(a[i].to_type(ScalarType.Float64).data<double>().ToArray().SequenceEqual(b[i].to_type(ScalarType.Float64).data<double>().ToArray()),
                    $"{name} {precision}: activation {i} of {a.Count} differs");
            }
        }
    }

    /// <summary>
    /// The job planner's token lengths (config and tokenizer only, no weights) are the explainer's, for every tokenizer
    /// kind on the seam (WordPiece, SentencePiece unigram and BPE, byte-level BPE), truncation included; blank is refused.
    /// </summary>
    [Theory]
    [InlineData("electra")]
    [InlineData("deberta-v2")]
    [InlineData("xlm-roberta")]
    [InlineData("onnx-roberta")]
    public void TokenCounterCountsAsTheExplainerTokenizes(string name)
    {
        var loaded = architectures[name];
        var explainer = new TextExplainer(loaded);
        var texts = Sentences.Append(string.Join(" ", Enumerable.Repeat("wonderful plot", 40))).ToList();
        var counter = new TokenCounter();
        foreach (int? max in new int?[] { null, 6 })
            Assert.Equal(explainer.Tokenize(texts, max).Select(t => t.Ids.Length), counter.Lengths(loaded.Directory, texts, max));
        Assert.Throws<AttributionRequestException>(() => counter.Lengths(loaded.Directory, new[] { "ok", " \t\0 " }, null));
    }

    [Fact]
    public void PaddedPositionsScoreExactlyZero()
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var explainer = new TextExplainer(loaded);
        var model = loaded.For(Precision.Float64);
        var items = Sorted(explainer, BatchingModels.Texts(Words));
        var batch = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        var result = new DeepLift().Attribute(model, batch, new MethodOptions { ReferenceCache = null });
        int width = (int)batch.Ids.shape[1];
        Assert.Contains(items, t => t.Ids.Length < width);
        for (int i = 0; i < items.Count; i++)
        {
            int l = items[i].Ids.Length;
            if (l == width) continue;
            Assert.Equal(0.0, result.Scores[i, TensorIndex.Slice(l, null)].abs().max().item<double>());
            Assert.Equal(0.0, result.Attributions[i, TensorIndex.Slice(l, null)].abs().max().item<double>());
            Assert.True(result.Scores[i, TensorIndex.Slice(0, l)].abs().max().item<double>() > 0, "real tokens get scores");
        }
    }

    [Fact]
    public void ReferenceIsOneRowPerDistinctLength()
    {
        var loaded = fixture.Models["MeanPoolingClassifier"];
        var explainer = new TextExplainer(loaded);
        var model = loaded.For(Precision.Float64);
        var items = Sorted(explainer, BatchingModels.Texts(Words));
        int distinct = items.Select(t => t.Ids.Length).Distinct().Count();
        Assert.True(distinct > 1 && distinct < items.Count);
        var batch = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        Assert.All(batch.ReferenceEmbeddings, r => Assert.Equal(distinct, r.shape[0]));
        var cache = new ReferenceCache(1L << 30);
        new DeepLift().Attribute(model, batch, new MethodOptions { ReferenceCache = cache });
        Assert.Equal(distinct, cache.Misses);
        Assert.Equal(distinct, cache.Count);
        var tapes = cache.Tapes.ToList();
        Assert.All(tapes, tape => Assert.True(tape.Steps > 0));
        // Every activation the rules received for the reference half: one row.
        Assert.All(tapes.SelectMany(t => t.Activations), a => Assert.Equal(1, a.shape[0]));
    }

    [Fact]
    public void CachedReferenceIsBitIdenticalToUncached()
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var texts = BatchingModels.Texts(Words);
        ReferenceCache.Shared.Clear();
        foreach (var precision in new[] { "float32", "float64" })
        {
            var request = new ExplainRequest { Precision = precision, BatchSize = 16 };
            var explainer = new TextExplainer(loaded) { CostModel = OneBatch };
            var uncached = explainer.Explain(texts, request with { ReferenceCacheMB = 0 });
            ReferenceCache.Shared.ResetCounters();
            var first = explainer.Explain(texts, request);
            var second = explainer.Explain(texts, request);
            Assert.True(ReferenceCache.Shared.Hits >= texts.Select(t => t.Split(' ').Length).Distinct().Count(), $"hits {ReferenceCache.Shared.Hits}");
            foreach (var run in new[] { first, second })
                for (int i = 0; i < texts.Count; i++)
                {
                    Assert.Equal(uncached[i].Scores, run[i].Scores);
                    Assert.Equal(uncached[i].Fx0, run[i].Fx0);
                    Assert.Equal(uncached[i].Delta, run[i].Delta);
                }
        }
    }

    [Theory]
    [InlineData(Precision.Float32)]
    [InlineData(Precision.BFloat16)] // LayerNorm's closed forms run in float32 there, and the tape keeps its r0 unrounded
    [InlineData(Precision.Float16)]
    public void ReplayedReferenceIsBitIdenticalToTheReferenceCarriedThroughThePass(Precision precision)
    {
        // Texts of one length: the engine's plain path (reference carried along, no tape) against the grouped path
        // replaying a tape recorded by an earlier pass.
        var loaded = fixture.Models["MeanPoolingClassifier"];
        var explainer = new TextExplainer(loaded);
        var model = loaded.For(precision);
        var items = explainer.Tokenize(BatchingModels.Texts(9, 9, 9, 9));
        var cache = new ReferenceCache(1L << 30);
        var options = new MethodOptions { ReferenceCache = cache };
        var batch = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        new DeepLift().Attribute(model, batch, options);
        var replayed = new DeepLift().Attribute(model, batch, options);
        Assert.Equal(1, cache.Hits);
        var carried = new DeepLift().Attribute(model, new AttributionBatch(batch.Ids, batch.AttentionMask, batch.ReferenceEmbeddings, null), options);
        Assert.Equal(carried.Scores.data<double>().ToArray(), replayed.Scores.data<double>().ToArray());
        Assert.Equal(carried.Fx0.data<double>().ToArray(), replayed.Fx0.data<double>().ToArray());
        Assert.Equal(carried.Delta.data<double>().ToArray(), replayed.Delta.data<double>().ToArray());
    }

    [Fact]
    public void DeepLiftShapOverMixedLengthsEqualsEachTextAlone()
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var texts = BatchingModels.Texts(Words);
        var request = new ExplainRequest { Method = "deeplift-shap", References = new[] { "pad", "mask" }, Precision = "float64", BatchSize = 16 };
        var mixed = new TextExplainer(loaded) { CostModel = OneBatch }.Explain(texts, request);
        for (int i = 0; i < texts.Count; i++)
        {
            var alone = new TextExplainer(loaded).Explain(new[] { texts[i] }, request with { Target = mixed[i].TargetIndex.ToString() })[0];
            double scale = Math.Max(1, alone.Scores.Max(Math.Abs));
            Assert.True(alone.Scores.Zip(mixed[i].Scores, (a, b) => Math.Abs(a - b)).Max() <= 1e-12 * scale, $"text {i}");
            Assert.True(Math.Abs(mixed[i].Delta) <= 1e-10, $"text {i}: delta {mixed[i].Delta:E2}");
        }
    }

    [Fact]
    public void AMixedBatchSplitIntoPassesEqualsOnePass()
    {
        var loaded = fixture.Models["MeanPoolingClassifier"];
        var explainer = new TextExplainer(loaded);
        var model = loaded.For(Precision.Float64);
        var items = Sorted(explainer, BatchingModels.Texts(Words));
        var batch = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        var whole = new DeepLift().Attribute(model, batch, new MethodOptions { ReferenceCache = null });
        // Room for about two texts a pass: the groups are cut across passes, each pass cut to its own longest text.
        long perText = DeepLift.BytesPerText(model.Config, batch.Ids.shape[1], model.DType);
        var split = new DeepLift().Attribute(model, batch, new MethodOptions { ReferenceCache = new ReferenceCache(1L << 30), PassMemoryBytes = 2 * perText + 1 });
        Assert.True(DeepLift.TextsPerPass(model.Config, batch.Ids.shape[1], model.DType, new MethodOptions { PassMemoryBytes = 2 * perText + 1 }) <= 2);
        Assert.Equal(whole.Scores.shape, split.Scores.shape);
        double scale = Math.Max(1, whole.Scores.abs().max().item<double>());
        Assert.True((whole.Scores - split.Scores).abs().max().item<double>() <= 1e-12 * scale);
        Assert.True((whole.Fx0 - split.Fx0).abs().max().item<double>() <= 1e-12 * scale);
    }

    /// <summary>
    /// A tape is kept per length, recorded at that length's own width: a later batch of another width (another job's)
    /// finds it, pads it to its width, and gives bit for bit what recording it afresh gives, and each text what it gets
    /// alone (1e-12, float64).
    /// </summary>
    [Fact]
    public void ATapeRecordedInANarrowBatchServesAWiderOne()
    {
        var loaded = fixture.Models["BertForSequenceClassification"];
        var explainer = new TextExplainer(loaded);
        var model = loaded.For(Precision.Float64);
        var cache = new ReferenceCache(1L << 30);
        var options = new MethodOptions { ReferenceCache = cache };
        var narrow = explainer.PaddedBatch(Sorted(explainer, BatchingModels.Texts(4, 7)), new[] { "pad" }, model, null);
        new DeepLift().Attribute(model, narrow, options);
        Assert.Equal((0, 2), (cache.Hits, cache.Misses));
        var texts = BatchingModels.Texts(12, 7, 4);
        var items = Sorted(explainer, texts);
        var wide = explainer.PaddedBatch(items, new[] { "pad" }, model, null);
        Assert.True(wide.Ids.shape[1] > narrow.Ids.shape[1]);
        var fromCache = new DeepLift().Attribute(model, wide, options);
        Assert.Equal((2, 3), (cache.Hits, cache.Misses)); // lengths 9 and 6 found at width 14; 14 recorded
        var fresh = new DeepLift().Attribute(model, wide, new MethodOptions { ReferenceCache = null });
        Assert.Equal(fresh.Scores.data<double>().ToArray(), fromCache.Scores.data<double>().ToArray());
        Assert.Equal(fresh.Fx0.data<double>().ToArray(), fromCache.Fx0.data<double>().ToArray());
        for (int i = 0; i < items.Count; i++)
        {
            var alone = new TextExplainer(loaded).Explain(new[] { items[i].Text }, new ExplainRequest { Precision = "float64", Target = fromCache.Targets[i].ToString(), ReferenceCacheMB = 0 })[0];
            int l = items[i].Ids.Length;
            var scores = fromCache.Scores[i].narrow(0, 0, l).data<double>().ToArray();
            double scale = Math.Max(1, alone.Scores.Max(Math.Abs));
            Assert.True(alone.Scores.Zip(scores, (a, b) => Math.Abs(a - b)).Max() <= 1e-12 * scale, $"text {i} ({l} tokens)");
            Assert.True(Math.Abs(alone.Fx0 - fromCache.Fx0[i].item<double>()) <= 1e-12 * Math.Max(1, Math.Abs(alone.Fx0)), $"text {i}: f(x0)");
        }
    }

    /// <summary>
    /// The padded tape replay on the fixtures without a tokenizer (DeBERTa-v2 with absolute positions, token types and
    /// unbucketed relative distances; separate position projections), built from ids: each row of a mixed-length batch,
    /// its references recorded at their own lengths and padded to the batch's width, gets what the text gets alone
    /// (float64, 1e-12), and its delta stays at rounding.
    /// </summary>
    [Theory]
    [InlineData("deberta-v2-options")]
    [InlineData("deberta-v2-separate-keys")]
    public void MixedLengthBatchFromIdsEqualsEachTextAlone(string fixture)
    {
        using var model = ModelLoader.Load(ArchitectureFixtures.Folder(fixture), dtype: ScalarType.Float64);
        int[] lengths = { 11, 11, 8, 5, 3 };
        int width = lengths.Max(), vocab = model.Config.VocabSize;
        const long cls = 1, sep = 2, pad = 0;
        var rng = new Random(7);
        long[] Text(int l) => Enumerable.Range(0, l).Select(i => i == 0 ? cls : i == l - 1 ? sep : rng.Next(5, vocab)).Select(v => (long)v).ToArray();
        long[] Reference(int l) => Enumerable.Range(0, l).Select(i => i == 0 ? cls : i == l - 1 ? sep : pad).ToArray();
        long[] Padded(long[] ids) => ids.Concat(Enumerable.Repeat(pad, width - ids.Length)).ToArray();
        var texts = lengths.Select(Text).ToList();
        var distinct = lengths.Distinct().ToArray();
        var ids = tensor(texts.SelectMany(Padded).ToArray()).reshape(lengths.Length, width);
        Tensor Mask(IEnumerable<int> ls) => tensor(ls.SelectMany(l => Enumerable.Range(0, width).Select(i => i < l ? 1L : 0L)).ToArray()).reshape(-1, width);
        var refs = model.WordEmbeddings(tensor(distinct.SelectMany(l => Padded(Reference(l))).ToArray()).reshape(distinct.Length, width));
        var groups = new ReferenceGroups(distinct.Select(l => (long)lengths.Count(x => x == l)).ToArray(), Mask(distinct), new[] { "pad" });
        var batch = new AttributionBatch(ids, Mask(lengths), new[] { refs }, null) { Groups = groups };
        var mixed = new DeepLift().Attribute(model, batch, new MethodOptions { ReferenceCache = new ReferenceCache(1L << 30) });
        for (int i = 0; i < lengths.Length; i++)
        {
            int l = lengths[i];
            var one = tensor(texts[i]).unsqueeze(0);
            var alone = new DeepLift().Attribute(model, new AttributionBatch(one, ones_like(one), new[] { model.WordEmbeddings(tensor(Reference(l)).unsqueeze(0)) },
                new[] { mixed.Targets[i] }), new MethodOptions { ReferenceCache = null });
            var a = alone.Scores[0].data<double>().ToArray();
            var m = mixed.Scores[i].narrow(0, 0, l).data<double>().ToArray();
            double scale = Math.Max(1, a.Max(Math.Abs));
            Assert.True(a.Zip(m, (x, y) => Math.Abs(x - y)).Max() <= 1e-12 * scale, $"{fixture} text {i} ({l} tokens)");
            Assert.All(mixed.Scores[i].narrow(0, l, width - l).data<double>().ToArray(), s => Assert.Equal(0.0, s));
            Assert.True(Math.Abs(alone.Fx0[0].item<double>() - mixed.Fx0[i].item<double>()) <= 1e-12, $"{fixture} text {i}: f(x0)");
            Assert.True(Math.Abs(mixed.Delta[i].item<double>()) <= 1e-10, $"{fixture} text {i}: delta {mixed.Delta[i].item<double>():E2}");
        }
    }

    /// <summary>
    /// Families that keep more per text than a BERT layer of the same sizes get fewer texts a pass under the same budget
    /// (their measured scale), so a worker's pass memory holds on DeBERTa and ModernBERT too; BERT-bodied ones keep the
    /// BERT count.
    /// </summary>
    [Theory]
    [InlineData("deberta-v3", 1.9)]
    [InlineData("modernbert", 1.6)]
    [InlineData("electra", 1.0)]
    [InlineData("xlm-roberta", 1.0)]
    public void PassMemoryCountsWhatEachFamilyKeeps(string name, double scale)
    {
        var model = architectures[name].For(Precision.Float32);
        Assert.Equal(scale, model.DeepLiftMemoryScale);
        long bert = DeepLift.BytesPerText(model.Config, 128, model.DType);
        Assert.Equal((long)(bert * scale), DeepLift.BytesPerText(model, 128));
        var options = new MethodOptions { PassMemoryBytes = 8 * bert };
        Assert.Equal(8, DeepLift.TextsPerPass(model.Config, 128, model.DType, options));
        Assert.Equal(Math.Max(1, (long)(8 * bert / (long)(bert * scale))), DeepLift.TextsPerPass(model, 128, options));
    }

    private static List<TokenizedText> Sorted(TextExplainer explainer, IReadOnlyList<string> texts) =>
        explainer.Tokenize(texts).OrderByDescending(t => t.Ids.Length).ToList();
}
