using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Faithfulness;
using AttributionFleet.Engine.Ops;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Text;

public sealed partial class TextExplainer
{
    /// <summary>
    /// The checks every explanation gets after its scores: the reference check (heads with probabilities: single-label
    /// softmax, multi-label sigmoid; a regression value or an embedding has no probability to move, so no check, null)
    /// and, when asked, faithfulness.
    /// </summary>
    private Explanation[] Checked(Explanation[] results, ExplainRequest request, double[]?[]? referenceProbabilities = null)
    {
        var model = Model.For(request.ParsePrecision());
        if (!model.HasClassifier) return results;
        if (model.Problem is ProblemType.SingleLabel or ProblemType.MultiLabel)
            CheckReferences(results, request, model, referenceProbabilities);
        if (request.Faithfulness)
        {
            var tokenized = Tokenize(results.Select(r => r.Text).ToList(), request.MaxLength);
            var measured = new FaithfulnessEvaluator(this, model, request).Evaluate(tokenized, results);
            for (int i = 0; i < results.Length; i++) results[i] = results[i] with { Faithfulness = measured[i] };
        }
        return results;
    }

    /// <summary>
    /// Each explanation's change in probability from its reference. <paramref name="known"/>: the probabilities at each
    /// text's reference where the method already computed them (DeepLift's reference half); the others get one plain
    /// forward per token length.
    /// </summary>
    private void CheckReferences(Explanation[] results, ExplainRequest request, Models.ITextModel model, double[]?[]? known)
    {
        var referenceProbabilities = new Dictionary<int, double[]>();
        for (int i = 0; i < results.Length; i++)
        {
            var e = results[i];
            int length = e.Tokens.Length;
            var p0 = known?[i];
            if (p0 is null && !referenceProbabilities.TryGetValue(length, out p0))
                referenceProbabilities[length] = p0 = ReferenceProbabilities(request, length, model);
            var p = e.Probabilities ?? throw new InvalidOperationException("an explanation without its probabilities cannot be checked");
            // A non-finite probability (of the text or of the reference) is no check at all: null, never a NaN "weak".
            ReferenceCheck? Check(int c)
            {
                double change = p[c] - p0[c];
                return double.IsFinite(change)
                    ? new ReferenceCheck(change, request.WeakReferenceThreshold, Math.Abs(change) < request.WeakReferenceThreshold)
                    : null;
            }
            results[i] = e with
            {
                Reference = Check(e.TargetIndex),
                Classes = e.Classes?.Select(c => c with { Reference = Check(c.TargetIndex) }).ToList(),
            };
        }
    }

    /// <summary>The head's probabilities at f(x0) (softmax, or a sigmoid per label) for the references of one token length, averaged over the references (plain forward, one row each).</summary>
    private double[] ReferenceProbabilities(ExplainRequest request, int length, Models.ITextModel model)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var mask = ones(1, length, dtype: ScalarType.Int64, device: model.Device);
        Tensor? sum = null;
        foreach (var reference in request.References)
        {
            var logits = model.Forward(PlainOps.Instance, new Act(ReferenceEmbeddings(reference, length, model)), mask).X;
            var probs = HeadOutputs.Probabilities(logits.to_type(ScalarType.Float64), model.Problem)!.cpu();
            sum = sum is null ? probs : sum + probs;
        }
        return (sum! / request.References.Count)[0].data<double>().ToArray();
    }
}
