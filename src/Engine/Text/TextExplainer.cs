using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Tokenization;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

/// <summary>
/// Texts in, predictions and explanations out. Texts are bucketed by token length, so a batch needs no
/// padding and every text of it shares one reference (computed once, broadcast through the network).
/// </summary>
public sealed class TextExplainer
{
    public LoadedModel Model { get; }

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
        var method = AttributionMethods.Create(request.Method);
        var precision = request.ParsePrecision();
        var model = Model.For(precision);
        var (outputKind, outputName) = HeadOutputs.Resolve(model.Problem, request.ParseOutput(), request.Output);
        var options = new MethodOptions
        {
            Output = outputKind,
            SoftmaxRule = request.ParseSoftmaxRule(),
            Steps = request.Steps,
            Integration = request.ParseIntegration(),
            Samples = request.Samples,
            PassMemoryBytes = request.PassMemoryMB is int mb ? (long)mb << 20 : null,
        };
        PrecisionSupport.Check(precision, Model.Device.type == TorchSharp.DeviceType.CUDA);
        if (!model.HasClassifier && request.Target is null)
            throw new AttributionRequestException("target", "this model has no classifier: name an output dimension as target");
        var tokenized = Tokenize(texts, request.MaxLength);
        int? fixedTarget = request.Target is null ? null : ResolveTarget(request.Target, model.OutputSize);
        var results = new Explanation[texts.Count];
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
            var logitRows = Rows(output.Logits);
            var probs = HeadOutputs.Probabilities(output.Logits, model.Problem) is { } pr ? Rows(pr) : null;
            var scores = Rows(output.Scores);
            var fx = output.Fx.data<double>().ToArray();
            var fx0 = output.Fx0.data<double>().ToArray();
            var delta = output.Delta.data<double>().ToArray();
            for (int j = 0; j < items.Count; j++)
            {
                var t = items[j];
                double change = Math.Abs(fx[j] - fx0[j]);
                double rel = delta[j] == 0 ? 0 : Math.Abs(delta[j]) / Math.Max(change, 1e-300);
                int target = (int)output.Targets[j];
                results[bucket[j]] = new Explanation(t.Text, t.Tokens, t.Offsets, scores[j], MakePrediction(logitRows[j], probs?[j], model),
                    target, LabelOf(target), outputName, fx[j], fx0[j], delta[j], rel, request.Method,
                    request.SoftmaxRule, request.Precision, t.Truncated);
            }
        }
        return results;
    }

    /// <summary>Indices of texts grouped by token length (longest first), chunked to the batch size.</summary>
    public static List<List<int>> Buckets(IReadOnlyList<TokenizedText> tokenized, int batchSize) =>
        tokenized.Select((t, i) => (t.Ids.Length, i))
            .GroupBy(p => p.Length)
            .OrderByDescending(g => g.Key)
            .SelectMany(g => g.Select(p => p.i).Chunk(Math.Max(1, batchSize)).Select(c => c.ToList()))
            .ToList();

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

    private Prediction MakePrediction(double[] logits, double[]? probs, Models.ITextModel model) =>
        HeadOutputs.Predict(logits, probs, model.Problem, LabelOf);

    private string LabelOf(int index) =>
        index < Model.Config.Labels.Count ? Model.Config.Labels[index] : index.ToString();

    private static Tensor IdsTensor(IReadOnlyList<TokenizedText> items)
    {
        int length = items[0].Ids.Length;
        var data = new long[items.Count * length];
        for (int i = 0; i < items.Count; i++)
            for (int j = 0; j < length; j++) data[i * length + j] = items[i].Ids[j];
        return tensor(data, dtype: ScalarType.Int64).reshape(items.Count, length);
    }

    private static double[][] Rows(Tensor t)
    {
        var flat = t.contiguous().data<double>().ToArray();
        int cols = (int)t.shape[1];
        return Enumerable.Range(0, (int)t.shape[0]).Select(i => flat.AsSpan(i * cols, cols).ToArray()).ToArray();
    }
}
