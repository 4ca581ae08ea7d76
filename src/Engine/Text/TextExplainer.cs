using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Tokenization;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// Texts in, predictions and explanations out. DeepLift and DeepLiftShap take texts of nearby lengths in one padded
/// batch (<see cref="LengthBuckets.Plan"/>: widths chosen by <see cref="CostModel"/>), each distinct length against its
/// own one-row reference, recorded once and kept in <see cref="ReferenceCache.Shared"/>. The other methods take texts
/// bucketed by exact token length, so a batch needs no padding and its texts share one reference.
/// </summary>
public sealed partial class TextExplainer
{
    public LoadedModel Model { get; }

    /// <summary>How DeepLift batches are cut; null: <see cref="BucketCostModel.For"/> the model's device.</summary>
    public BucketCostModel? CostModel { get; init; }

    public TextExplainer(LoadedModel model) => Model = model;

    public int MaxLength(int? requested) => Math.Min(requested ?? int.MaxValue, Model.Config.MaxSequenceLength);

    public IReadOnlyList<TokenizedText> Tokenize(IReadOnlyList<string> texts, int? maxLength = null)
    {
        int max = MaxLength(maxLength);
        using var span = EngineTelemetry.Source.StartActivity("engine.tokenize");
        span?.SetTag("engine.texts", texts.Count);
        var result = new TokenizedText[texts.Count];
        for (int i = 0; i < texts.Count; i++)
        {
            if (TextContent.IsBlank(texts[i])) throw new AttributionRequestException($"texts[{i}]", $"text {i} is empty");
            result[i] = Model.Tokenizer.Encode(texts[i], max);
        }
        return result;
    }

    public IReadOnlyList<PredictionResult> Predict(IReadOnlyList<string> texts, int batchSize = 32, int? maxLength = null)
    {
        var tokenized = Tokenize(texts, maxLength);
        var results = new PredictionResult[texts.Count];
        var model = Model.Float32;
        foreach (var bucket in Buckets(tokenized, batchSize))
        {
            using var scope = NewDisposeScope();
            var ids = IdsTensor(bucket.Select(i => tokenized[i]).ToList()).to(model.Device);
            var logits = model.Logits(ids, ones_like(ids)).to_type(ScalarType.Float64).cpu();
            var probs = HeadOutputs.Probabilities(logits, model.Problem);
            for (int j = 0; j < bucket.Count; j++)
            {
                var t = tokenized[bucket[j]];
                var l = logits[j].data<double>().ToArray();
                var p = probs?[j].data<double>().ToArray();
                results[bucket[j]] = new PredictionResult(t.Text, t.Tokens, MakePrediction(l, p, model), p ?? Array.Empty<double>(), l, t.Truncated);
            }
        }
        return results;
    }

    public IReadOnlyList<Explanation> Explain(IReadOnlyList<string> texts, ExplainRequest request)
    {
        request.Validate();
        if (request.ExplainsEveryTarget) return Checked(ExplainEveryTarget(texts, request), request);
        var method = AttributionMethods.Create(request.Method);
        var precision = request.ParsePrecision();
        var model = Model.For(precision);
        var (outputKind, outputName) = HeadOutputs.Resolve(model.Problem, request.ParseOutput(), request.Output);
        var options = MethodOptionsFor(request, outputKind) with { ReferenceCache = ReferenceCacheFor(request) };
        PrecisionSupport.Check(precision, Model.Device.type == TorchSharp.DeviceType.CUDA);
        if (!model.HasClassifier && request.Target is null)
            throw new AttributionRequestException("target", "this model has no classifier: name an output dimension as target");
        var tokenized = Tokenize(texts, request.MaxLength);
        int? fixedTarget = request.Target is null ? null : ResolveTarget(request.Target, model.OutputSize);
        var results = new Explanation[texts.Count];
        var referenceProbabilities = new double[]?[texts.Count];
        if (method is DeepLift or DeepLiftShap)
        {
            ExplainPadded(tokenized, request, method, options, model, fixedTarget, outputName, results, referenceProbabilities);
            return Checked(results, request, referenceProbabilities);
        }
        foreach (var bucket in Buckets(tokenized, request.BatchSize))
        {
            using var scope = NewDisposeScope();
            var items = bucket.Select(i => tokenized[i]).ToList();
            int length = items[0].Ids.Length;
            var ids = IdsTensor(items).to(model.Device);
            var mask = ones_like(ids);
            var references = request.References.Select(r => ReferenceEmbeddings(r, length, model)).ToList();
            // No target: each text's predicted class, which the method takes from its own forward pass at x.
            var targets = fixedTarget is int t0 ? Enumerable.Repeat((long)t0, items.Count).ToArray() : null;
            AttributionOutput output;
            using (var span = EngineTelemetry.Source.StartActivity("engine.attribute"))
            {
                span?.SetTag("engine.method", request.Method);
                span?.SetTag("engine.texts", items.Count);
                span?.SetTag("engine.tokens", length);
                output = method.Attribute(model, new AttributionBatch(ids, mask, references, targets), options);
            }
            Collect(output, items, bucket, results, request, model, outputName, referenceProbabilities);
        }
        return Checked(results, request, referenceProbabilities);
    }

    /// <summary>
    /// What DeepLift batches of <paramref name="request"/> are cut by: <see cref="CostModel"/>, or the device's, with the
    /// architecture's packing and the passes the pass memory budget splits a batch into.
    /// </summary>
    public BucketCostModel PlanCost(ExplainRequest request) =>
        CostModel ?? PlanCost(Model.For(request.ParsePrecision()), MethodOptionsFor(request, OutputKind.Logit));

    private BucketCostModel PlanCost(Models.ITextModel model, MethodOptions options) =>
        BucketCostModel.For(model.Device.type, Model.Config.HiddenSize, Architectures.ArchitectureRegistry.Of(Model.Config).PacksTokens)
            with { TextsPerPass = width => DeepLift.TextsPerPass(model, width, options, device: model.Device.type) };

    /// <summary>
    /// DeepLift over padded batches of nearby lengths: texts sorted by length inside a batch, so each length is one
    /// contiguous group with its own reference row and mask (<see cref="ReferenceGroups"/>); padded positions hold [PAD]
    /// in the text and in its reference, so they score exactly 0.
    /// </summary>
    private void ExplainPadded(IReadOnlyList<TokenizedText> tokenized, ExplainRequest request, IAttributionMethod method, MethodOptions options,
        Models.ITextModel model, int? fixedTarget, string outputName, Explanation[] results, double[]?[] referenceProbabilities)
    {
        var cost = CostModel ?? PlanCost(model, options);
        // The plan does not look at the reference cache: the same texts get the same batches, so the same numbers to the
        // last bit, whatever ran before (planning around cached lengths changed results at rounding level).
        foreach (var bucket in LengthBuckets.Plan(tokenized.Select(t => t.Ids.Length).ToList(), request.BatchSize, cost))
        {
            using var scope = NewDisposeScope();
            var items = bucket.Select(i => tokenized[i]).ToList();
            var targets = fixedTarget is int t0 ? Enumerable.Repeat((long)t0, items.Count).ToArray() : null;
            var batch = PaddedBatch(items, request.References, model, targets);
            int width = (int)batch.Ids.shape[1];
            var lengths = batch.Groups!.Count;
            AttributionOutput output;
            using (var span = EngineTelemetry.Source.StartActivity("engine.attribute"))
            {
                span?.SetTag("engine.method", request.Method);
                span?.SetTag("engine.texts", items.Count);
                span?.SetTag("engine.tokens", width);
                span?.SetTag("engine.lengths", lengths);
                output = method.Attribute(model, batch, options);
            }
            Interlocked.Add(ref _passRows, items.Count);
            Interlocked.Increment(ref _passes);
            Collect(output, items, bucket, results, request, model, outputName, referenceProbabilities);
        }
    }

    /// <summary>
    /// One batch's results into <paramref name="results"/> at the texts' indices: scores cut to each text's own length
    /// (a padded batch's pads score exactly 0 and are not the text's), prediction and probabilities as the head means them;
    /// with <paramref name="referenceProbabilities"/>, the head's probabilities at each text's reference where the method
    /// computed its logits (for the reference check).
    /// </summary>
    private void Collect(AttributionOutput output, IReadOnlyList<TokenizedText> items, IReadOnlyList<int> bucket, Explanation[] results,
        ExplainRequest request, Models.ITextModel model, string outputName, double[]?[]? referenceProbabilities = null)
    {
        if (referenceProbabilities is not null && output.ReferenceLogits is { } referenceLogits
            && HeadOutputs.Probabilities(referenceLogits, model.Problem) is { } rp)
        {
            var rows = Rows(rp);
            for (int j = 0; j < items.Count; j++) referenceProbabilities[bucket[j]] = rows[j];
        }
        var logitRows = Rows(output.Logits);
        var probs = HeadOutputs.Probabilities(output.Logits, model.Problem) is { } pr ? Rows(pr) : null;
        var scores = Rows(output.Scores);
        var fx = output.Fx.data<double>().ToArray();
        var fx0 = output.Fx0.data<double>().ToArray();
        var delta = output.Delta.data<double>().ToArray();
        for (int j = 0; j < items.Count; j++)
        {
            var t = items[j];
            int target = (int)output.Targets[j];
            results[bucket[j]] = new Explanation(t.Text, t.Tokens, t.Offsets, scores[j][..t.Ids.Length], MakePrediction(logitRows[j], probs?[j], model),
                target, LabelOf(target), outputName, fx[j], fx0[j], delta[j], RelativeDelta(fx[j], fx0[j], delta[j]), request.Method,
                request.SoftmaxRule, request.Precision, t.Truncated) { Probabilities = probs?[j] };
        }
    }

    /// <summary>|delta| / |f(x) − f(x0)|; 0 when delta is exactly 0.</summary>
    internal static double RelativeDelta(double fx, double fx0, double delta) =>
        delta == 0 ? 0 : Math.Abs(delta) / Math.Max(Math.Abs(fx - fx0), 1e-300);

    /// <summary>The method options a request names (the reference cache is the caller's: setting it resizes the process's cache).</summary>
    private static MethodOptions MethodOptionsFor(ExplainRequest request, OutputKind outputKind) => new()
    {
        Output = outputKind,
        SoftmaxRule = request.ParseSoftmaxRule(),
        Steps = request.Steps,
        Integration = request.ParseIntegration(),
        Samples = request.Samples,
        PassMemoryBytes = request.PassMemoryMB is int mb ? (long)mb << 20 : null,
    };

    /// <summary>
    /// Texts of any lengths as one padded DeepLift batch: sorted by length (longest first), padded with [PAD] to the
    /// longest, one reference row per distinct length (padded the same way) with that length's mask.
    /// </summary>
    internal AttributionBatch PaddedBatch(IReadOnlyList<TokenizedText> items, IReadOnlyList<string> references, Models.ITextModel model, long[]? targets)
    {
        for (int i = 1; i < items.Count; i++)
            if (items[i].Ids.Length > items[i - 1].Ids.Length) throw new ArgumentException("texts of a padded batch go longest first", nameof(items));
        int width = items[0].Ids.Length;
        var lengths = items.Select(t => t.Ids.Length).Distinct().ToArray();
        var rows = lengths.Select(l => (long)items.Count(t => t.Ids.Length == l)).ToArray();
        var ids = PaddedIdsTensor(items, width, Model.Tokenizer.PadId).to(model.Device);
        var mask = MaskTensor(items.Select(t => t.Ids.Length).ToArray(), width).to(model.Device);
        var masks = MaskTensor(lengths, width).to(model.Device);
        var embeddings = references
            .Select(r => cat(lengths.Select(l => PaddedReferenceEmbeddings(r, l, width, model)).ToArray(), 0)).ToList();
        return new AttributionBatch(ids, mask, embeddings, targets) { Groups = new ReferenceGroups(rows, masks, references) };
    }

    private long _passes, _passRows;

    /// <summary>DeepLift batches this explainer ran and the texts in them (the bench's mean rows per pass).</summary>
    public (long Batches, long Texts) BatchCounts => (Interlocked.Read(ref _passes), Interlocked.Read(ref _passRows));

    /// <summary>The process's reference cache, resized when the request names a budget; none when it names 0.</summary>
    private static ReferenceCache? ReferenceCacheFor(ExplainRequest request)
    {
        if (request.ReferenceCacheMB is not int mb) return ReferenceCache.Shared;
        if (mb == 0) return null;
        ReferenceCache.Shared.BudgetBytes = (long)mb << 20;
        return ReferenceCache.Shared;
    }

    /// <summary>Indices of texts grouped by token length (longest first), chunked to the batch size.</summary>
    public static List<List<int>> Buckets(IReadOnlyList<TokenizedText> tokenized, int batchSize) =>
        LengthBuckets.Exact(tokenized.Select(t => t.Ids.Length).ToList(), batchSize);

    public int ResolveTarget(string target, int outputs)
    {
        var labels = Model.Config.Labels;
        int index = -1;
        for (int i = 0; i < labels.Count; i++)
            if (string.Equals(labels[i], target, StringComparison.OrdinalIgnoreCase)) index = i;
        if (index < 0 && !int.TryParse(target, out index))
            throw new AttributionRequestException("target", $"unknown target '{target}'; labels are: {string.Join(", ", labels)} (or an index 0..{outputs - 1})");
        if (index < 0 || index >= outputs)
            throw new AttributionRequestException("target", $"target {index} is out of range: the model has {outputs} outputs (0..{outputs - 1})");
        return index;
    }

    /// <summary>
    /// The reference's word embeddings [1, L, H]: every token but the start/end specials replaced by
    /// [PAD], [MASK] or [UNK], or a zero embedding; or a custom text that must tokenize to the same length.
    /// </summary>
    public Tensor ReferenceEmbeddings(string reference, int length, Models.ITextModel model)
    {
        var tok = Model.Tokenizer;
        int? fill = reference switch { "pad" => tok.PadId, "mask" => tok.MaskId, "unk" => tok.UnkId, "zero" => tok.PadId, _ => null };
        int[] ids;
        if (fill is { } f)
        {
            ids = Enumerable.Repeat(f, length).ToArray();
            ids[0] = tok.StartId;
            ids[^1] = tok.EndId;
        }
        else
        {
            var encoded = tok.Encode(reference, length + 1);
            if (encoded.Ids.Length != length)
                throw new AttributionRequestException("reference",
                    $"reference text tokenizes to {encoded.Ids.Length} tokens but the text to explain has {length}; a custom reference needs the same length");
            ids = encoded.Ids;
        }
        var idTensor = tensor(ids.Select(i => (long)i).ToArray(), dtype: ScalarType.Int64, device: model.Device).unsqueeze(0);
        var embeddings = model.WordEmbeddings(idTensor);
        if (reference == "zero")
        {
            var keep = zeros(1, length, 1, dtype: embeddings.dtype, device: model.Device);
            keep[0, 0, 0] = 1;
            keep[0, length - 1, 0] = 1;
            embeddings = embeddings * keep;
        }
        return embeddings;
    }

    /// <summary>
    /// <see cref="ReferenceEmbeddings"/> for a text of <paramref name="length"/> tokens, padded to <paramref name="width"/>
    /// with the [PAD] embedding (what the padded text holds there, so padded positions differ by exactly 0).
    /// </summary>
    public Tensor PaddedReferenceEmbeddings(string reference, int length, int width, Models.ITextModel model)
    {
        var embeddings = ReferenceEmbeddings(reference, length, model);
        if (width == length) return embeddings;
        var pads = full(new long[] { 1, width - length }, (long)Model.Tokenizer.PadId, dtype: ScalarType.Int64, device: model.Device);
        return cat(new[] { embeddings, model.WordEmbeddings(pads) }, 1);
    }

    private Prediction MakePrediction(double[] logits, double[]? probs, Models.ITextModel model) =>
        HeadOutputs.Predict(logits, probs, model.Problem, LabelOf);

    private string LabelOf(int index) =>
        index < Model.Config.Labels.Count ? Model.Config.Labels[index] : index.ToString();

    /// <summary>Token ids [B, L] (int64, CPU) of texts of one length.</summary>
    public static Tensor IdsTensor(IReadOnlyList<TokenizedText> items)
    {
        int length = items[0].Ids.Length;
        var data = new long[items.Count * length];
        for (int i = 0; i < items.Count; i++)
            for (int j = 0; j < length; j++) data[i * length + j] = items[i].Ids[j];
        return tensor(data, dtype: ScalarType.Int64).reshape(items.Count, length);
    }

    private static Tensor PaddedIdsTensor(IReadOnlyList<TokenizedText> items, int width, int padId)
    {
        var data = new long[items.Count * width];
        Array.Fill(data, padId);
        for (int i = 0; i < items.Count; i++)
            for (int j = 0; j < items[i].Ids.Length; j++) data[i * width + j] = items[i].Ids[j];
        return tensor(data, dtype: ScalarType.Int64).reshape(items.Count, width);
    }

    private static Tensor MaskTensor(int[] lengths, int width)
    {
        var data = new long[lengths.Length * width];
        for (int i = 0; i < lengths.Length; i++)
            for (int j = 0; j < lengths[i]; j++) data[i * width + j] = 1;
        return tensor(data, dtype: ScalarType.Int64).reshape(lengths.Length, width);
    }

    private static double[][] Rows(Tensor t)
    {
        var flat = t.contiguous().data<double>().ToArray();
        int cols = (int)t.shape[1];
        return Enumerable.Range(0, (int)t.shape[0]).Select(i => flat.AsSpan(i * cols, cols).ToArray()).ToArray();
    }
}
