using AttributionFleet.Engine.Attribution;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

public sealed partial class TextExplainer
{
    /// <summary>
    /// <c>--target all</c>: every text explained for every output of the head (<see cref="EveryTarget"/>: DeepLift from one
    /// forward pass): each class of a single-label head, each label of a multi-label head (its logit or sigmoid), each
    /// value of a regression head. Each result's <see cref="Explanation.Classes"/> holds one row per output; its top-level
    /// fields are the row of the prediction (the most probable label, or value 0 of a regression head), so a reader that
    /// knows nothing of the other rows still reads a consistent result.
    /// </summary>
    private Explanation[] ExplainEveryTarget(IReadOnlyList<string> texts, ExplainRequest request)
    {
        var method = AttributionMethods.Create(request.Method);
        var precision = request.ParsePrecision();
        var model = Model.For(precision);
        // The head decides what each class's scalar is (multi-label: the label's logit or sigmoid; regression: the value).
        var (outputKind, outputName) = HeadOutputs.Resolve(model.Problem, request.ParseOutput(), request.Output);
        var options = MethodOptionsFor(request, outputKind);
        PrecisionSupport.Check(precision, Model.Device.type == TorchSharp.DeviceType.CUDA);
        if (!model.HasClassifier)
            throw new AttributionRequestException("target", "target 'all' explains every output of a head; this model is a bare encoder: name an output dimension as target");
        var tokenized = Tokenize(texts, request.MaxLength);
        var results = new Explanation[texts.Count];
        foreach (var bucket in Buckets(tokenized, request.BatchSize))
        {
            using var scope = NewDisposeScope();
            var items = bucket.Select(i => tokenized[i]).ToList();
            int length = items[0].Ids.Length;
            var ids = IdsTensor(items).to(model.Device);
            var references = request.References.Select(r => ReferenceEmbeddings(r, length, model)).ToList();
            IReadOnlyList<AttributionOutput> outputs;
            using (var span = EngineTelemetry.Source.StartActivity("engine.attribute"))
            {
                span?.SetTag("engine.method", request.Method);
                span?.SetTag("engine.texts", items.Count);
                span?.SetTag("engine.tokens", length);
                span?.SetTag("engine.targets", "all");
                outputs = EveryTarget.Attribute(method, model, new AttributionBatch(ids, ones_like(ids), references, null), options);
            }
            var logitRows = Rows(outputs[0].Logits);
            var probs = HeadOutputs.Probabilities(outputs[0].Logits, model.Problem) is { } pr ? Rows(pr) : null;
            var perClass = outputs.Select(o => (Scores: Rows(o.Scores), Fx: o.Fx.data<double>().ToArray(),
                Fx0: o.Fx0.data<double>().ToArray(), Delta: o.Delta.data<double>().ToArray())).ToList();
            for (int j = 0; j < items.Count; j++)
            {
                var t = items[j];
                var classes = perClass.Select((o, c) =>
                {
                    return new ClassAttribution(c, LabelOf(c), o.Scores[j], o.Fx[j], o.Fx0[j], o.Delta[j], RelativeDelta(o.Fx[j], o.Fx0[j], o.Delta[j]));
                }).ToList();
                var prediction = MakePrediction(logitRows[j], probs?[j], model);
                var main = classes[prediction.Index];
                results[bucket[j]] = new Explanation(t.Text, t.Tokens, t.Offsets, main.Scores, prediction, main.TargetIndex, main.TargetLabel,
                    outputName, main.Fx, main.Fx0, main.Delta, main.RelativeDelta, request.Method, request.SoftmaxRule, request.Precision,
                    t.Truncated) { Probabilities = probs?[j], Classes = classes };
            }
        }
        return results;
    }
}
