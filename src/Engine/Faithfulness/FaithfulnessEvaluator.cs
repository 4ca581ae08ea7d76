using System.Diagnostics;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Ops;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Tokenization;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Faithfulness;

/// <summary>
/// Faithfulness measured by the product (issue #16 item 2): do the top tokens really drive the prediction?
/// The n tokens of a text other than its start and end specials are ranked by score, highest first (ties: earlier
/// position first). A token is removed by putting the reference's word embedding at its position (the same
/// reference the scores were taken against: <c>[PAD]</c>, <c>[MASK]</c>, <c>[UNK]</c>, the zero embedding or a
/// custom text's token; with several references, the first); the specials always stay. With <c>p</c> the
/// probability of the explained class c as the head means it (single-label: softmax; multi-label: the label's sigmoid;
/// a regression head has no probability: <c>p</c> is then the value itself, in output units) and <c>top(k)</c> the k
/// highest-ranked tokens:
/// <list type="bullet">
/// <item>comprehensiveness@k = p(x) − p(x with top(k) removed) (ERASER, DeYoung et al. 2020);</item>
/// <item>sufficiency@k = p(x) − p(x with every token but top(k) removed);</item>
/// <item>for k = 1, 5, 10, 20 % of n: <c>min(n, max(1, ceil(k·n)))</c> tokens;</item>
/// <item>AOPC of the deletion curve (Samek et al. 2017) = 1/(P+1) Σ_{j=0..P} [p(x) − p(x with top(k_j) removed)];</item>
/// <item>AOPC of the insertion curve = 1/(P+1) Σ_{j=0..P} [p(only top(k_j) kept) − p(every token removed)];</item>
/// <item>curve points <c>k_j = round(j·n/P)</c>, <c>P = min(n, 20)</c>: every token count for short texts, 21 points beyond.</item>
/// </list>
/// Every perturbed input of every text of one length goes through the model in batched plain forward passes
/// (identical inputs of one text are sent once); the count and the time are reported per text.
/// </summary>
public sealed class FaithfulnessEvaluator
{
    public static readonly double[] Fractions = { 0.01, 0.05, 0.10, 0.20 };
    public const int MaxCurveSegments = 20;
    /// <summary>Rows per forward pass (perturbed inputs are plain forwards: no multipliers are kept).</summary>
    public int RowsPerPass { get; init; } = 64;

    private readonly TextExplainer _explainer;
    private readonly ITextModel _model;
    private readonly string _reference;

    public FaithfulnessEvaluator(TextExplainer explainer, ITextModel model, ExplainRequest request)
    {
        _explainer = explainer;
        _model = model;
        _reference = request.References[0];
    }

    /// <summary>One result per text (null where a text has no token but its specials), for the class each explanation explains.</summary>
    public FaithfulnessResult?[] Evaluate(IReadOnlyList<TokenizedText> tokenized, IReadOnlyList<Explanation> explanations) =>
        Evaluate(tokenized, explanations.Select(e => e.Scores).ToList(), explanations.Select(e => e.TargetIndex).ToList());

    /// <summary>The same for any scores (one per token) and classes: the seam the method comparison uses.</summary>
    public FaithfulnessResult?[] Evaluate(IReadOnlyList<TokenizedText> tokenized, IReadOnlyList<double[]> scores, IReadOnlyList<int> targets)
    {
        var results = new FaithfulnessResult?[tokenized.Count];
        foreach (var group in Enumerable.Range(0, tokenized.Count).GroupBy(i => tokenized[i].Ids.Length))
        {
            var plans = group.Where(i => tokenized[i].Ids.Length > 2)
                .Select(i => Plan.For(i, tokenized[i].Ids.Length, scores[i], targets[i])).ToList();
            if (plans.Count > 0) Run(group.Key, plans, tokenized, results);
        }
        return results;
    }

    private void Run(int length, List<Plan> plans, IReadOnlyList<TokenizedText> tokenized, FaithfulnessResult?[] results)
    {
        var watch = Stopwatch.StartNew();
        var rows = plans.SelectMany((p, t) => p.Inputs.Select(removed => (Text: t, Removed: removed))).ToList();
        var probability = new double[rows.Count];
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var reference = _explainer.ReferenceEmbeddings(_reference, length, _model);
            var ids = tensor(plans.SelectMany(p => tokenized[p.Text].Ids.Select(i => (long)i)).ToArray(), dtype: ScalarType.Int64, device: _model.Device)
                .reshape(plans.Count, length);
            var embeddings = _model.WordEmbeddings(ids);
            for (int start = 0; start < rows.Count; start += RowsPerPass)
            {
                using var pass = NewDisposeScope();
                int count = Math.Min(RowsPerPass, rows.Count - start);
                var chunk = rows.GetRange(start, count);
                var texts = tensor(chunk.Select(r => (long)r.Text).ToArray(), dtype: ScalarType.Int64, device: _model.Device);
                var removed = tensor(chunk.SelectMany(r => r.Removed).ToArray(), device: _model.Device).reshape(count, length, 1);
                var input = where(removed, reference, embeddings.index_select(0, texts));
                var mask = ones(count, length, dtype: ScalarType.Int64, device: _model.Device);
                var outputs = _model.Forward(PlainOps.Instance, new Act(input), mask).X.to_type(ScalarType.Float64);
                var probs = HeadOutputs.Probabilities(outputs, _model.Problem) ?? outputs;
                var classes = tensor(chunk.Select(r => (long)plans[r.Text].Target).ToArray(), dtype: ScalarType.Int64, device: _model.Device);
                probs.gather(1, classes.unsqueeze(1)).squeeze(1).cpu().data<double>().ToArray().CopyTo(probability, start);
            }
        }
        double perRow = watch.Elapsed.TotalMilliseconds / rows.Count;
        int offset = 0;
        foreach (var plan in plans)
        {
            var p = probability.AsSpan(offset, plan.Inputs.Count).ToArray();
            offset += plan.Inputs.Count;
            results[plan.Text] = plan.Result(p, perRow * plan.Inputs.Count);
        }
    }

    /// <summary>The perturbed inputs of one text (as "removed" masks over its positions, deduplicated) and how each metric reads them.</summary>
    private sealed class Plan
    {
        public int Text { get; private init; }
        public int Target { get; private init; }
        public List<bool[]> Inputs { get; } = new();
        private readonly Dictionary<string, int> _index = new();
        private int _original, _empty;
        private int[] _tokens = Array.Empty<int>(), _comprehensiveness = Array.Empty<int>(), _sufficiency = Array.Empty<int>();
        private int[] _deletion = Array.Empty<int>(), _insertion = Array.Empty<int>();

        public static Plan For(int text, int length, double[] scores, int target)
        {
            // Specials (first and last position) always stay; the rest is ranked by score, highest first.
            var ranked = Enumerable.Range(1, length - 2).OrderByDescending(i => scores[i]).ThenBy(i => i).ToArray();
            int n = ranked.Length;
            var plan = new Plan { Text = text, Target = target };
            bool[] Removing(IEnumerable<int> positions)
            {
                var removed = new bool[length];
                foreach (var i in positions) removed[i] = true;
                return removed;
            }
            int Top(int k) => plan.Add(Removing(ranked.Take(k)));
            int AllBut(int k) => plan.Add(Removing(ranked.Skip(k)));
            plan._original = Top(0);
            plan._empty = AllBut(0);
            plan._tokens = Fractions.Select(f => Math.Min(n, Math.Max(1, (int)Math.Ceiling(f * n - 1e-9)))).ToArray();
            plan._comprehensiveness = plan._tokens.Select(Top).ToArray();
            plan._sufficiency = plan._tokens.Select(AllBut).ToArray();
            int segments = Math.Min(n, MaxCurveSegments);
            var points = Enumerable.Range(0, segments + 1).Select(j => (int)Math.Round((double)j * n / segments, MidpointRounding.AwayFromZero)).ToArray();
            plan._deletion = points.Select(Top).ToArray();
            plan._insertion = points.Select(AllBut).ToArray();
            return plan;
        }

        private int Add(bool[] removed)
        {
            var key = new string(removed.Select(b => b ? '1' : '0').ToArray());
            if (_index.TryGetValue(key, out var i)) return i;
            _index[key] = Inputs.Count;
            Inputs.Add(removed);
            return Inputs.Count - 1;
        }

        public FaithfulnessResult Result(double[] p, double milliseconds)
        {
            double px = p[_original], empty = p[_empty];
            return new FaithfulnessResult(Fractions.ToArray(), _tokens,
                _comprehensiveness.Select(i => px - p[i]).ToArray(),
                _sufficiency.Select(i => px - p[i]).ToArray(),
                px,
                _deletion.Average(i => px - p[i]),
                _insertion.Average(i => p[i] - empty),
                _deletion.Length, Inputs.Count, milliseconds);
        }
    }
}
