using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Faithfulness;

/// <summary>
/// A linear bag-of-words classifier in the engine's own format (config.json + model.safetensors + vocab.txt, read
/// back by the engine's loader): a one-layer mean-pooled BERT whose attention and feed-forward weights are zero, so
/// each layer passes every token through LayerNorm alone and nothing mixes tokens; position and token-type
/// embeddings are zero, so a token's effect does not depend on where it stands. Word w has the embedding
/// [a, −a, b, −b], and so do the specials and [PAD] (not the zero vector: LayerNorm's 1/sqrt(var + 1e-12) of a zero row
/// is 1e6, and the product rule's two terms then cancel to a few digits, which the delta reports). The logits are then
/// <c>z = bias + (1/L) Σ_i W n(e_i)</c>, n = three LayerNorms; with W₀ = 0 and W₁ = [w₁, 0, w₂, 0], a text's
/// <c>z₁ − z₀ = bias₁ − bias₀ + (1/L) Σ_i v(word_i)</c> and <c>p₁ = σ(z₁ − z₀)</c>: every value of the faithfulness
/// metrics follows by hand (<see cref="Value"/>, <see cref="ProbabilityOfPositive"/>).
/// </summary>
public sealed class BagOfWordsModel : IDisposable
{
    public const double Eps = 1e-12;
    public static readonly double[] Weights = { 1.5, -0.5 }; // w1, w2
    public static readonly double[] Bias = { 0.1, -0.2 };    // bias0, bias1
    /// <summary>word → (a, b); distinct values v(word), so the ranking by score is unambiguous.</summary>
    public static readonly Dictionary<string, (double A, double B)> Embeddings = new()
    {
        ["great"] = (2.0, -1.0), ["good"] = (1.0, 0.2), ["fine"] = (0.3, 0.4), ["movie"] = (0.05, 0.3),
        ["but"] = (-0.1, 0.5), ["and"] = (0.2, 1.0), ["bad"] = (-1.0, 0.5), ["awful"] = (-2.0, 1.5),
        ["acting"] = (0.4, 0.35), ["music"] = (-0.3, 0.2),
        ["[PAD]"] = (0.5, 0.6), ["[CLS]"] = (1.0, 1.0), ["[SEP]"] = (-0.7, 0.2),
    };
    private static readonly string[] Vocabulary = Embeddings.Keys.Where(w => !w.StartsWith('[')).ToArray();

    private readonly string _dir;
    public LoadedModel Loaded { get; }

    public BagOfWordsModel()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fleet-bow-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        var config = RandomModels.BertConfig(layers: 1, hidden: 4, heads: 1, intermediate: 4, vocab: 300, labels: 2,
            maxPositions: 64, architecture: "MeanPoolingClassifier") with { LayerNormEps = Eps, Labels = new List<string> { "negative", "positive" } };
        File.WriteAllLines(Path.Combine(_dir, "vocab.txt"), Enumerable.Range(0, config.VocabSize).Select(i => i switch
        {
            0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
            >= 200 when i - 200 < Vocabulary.Length => Vocabulary[i - 200],
            _ => $"[unused{i}]",
        }));
        using (var model = RandomModels.Create(config, seed: 1))
        using (no_grad())
        {
            var w = model.Weights; // by role (the architecture's WeightTable); Q, K and V are views into one stack
            w["word"].zero_();
            void Set(int id, string word)
            {
                var (a, b) = Embeddings[word];
                w["word"][id] = tensor(new[] { (float)a, (float)-a, (float)b, (float)-b });
            }
            for (int i = 0; i < Vocabulary.Length; i++) Set(200 + i, Vocabulary[i]);
            Set(0, "[PAD]");
            Set(101, "[CLS]");
            Set(102, "[SEP]");
            w["position"].zero_();
            w["type"].zero_();
            foreach (var part in new[] { "q", "k", "v", "q.b", "k.b", "v.b", "o", "o.b", "ff1", "ff1.b", "ff2", "ff2.b" })
                w["L0." + part].zero_();
            w["cls"].zero_();
            w["cls"][1] = tensor(new[] { (float)Weights[0], 0f, (float)Weights[1], 0f });
            w["cls.b"][0] = (float)Bias[0];
            w["cls.b"][1] = (float)Bias[1];
            RandomModels.Save(model, _dir);
        }
        Loaded = LoadedModel.Load(_dir, CPU);
    }

    /// <summary>LayerNorm with γ = 1, β = 0 over a vector, as the formula says.</summary>
    private static double[] LayerNorm(double[] x)
    {
        double mean = x.Average();
        double variance = x.Average(t => (t - mean) * (t - mean));
        return x.Select(t => (t - mean) / Math.Sqrt(variance + Eps)).ToArray();
    }

    /// <summary>v(word) = W₁ · n(e) − W₀ · n(e): the word's share of L·(z₁ − z₀). The embeddings are stored in float32, as the checkpoint holds them.</summary>
    public static double Value(string word)
    {
        var e = Embeddings[word];
        double a = (float)e.A, b = (float)e.B;
        var n = LayerNorm(LayerNorm(LayerNorm(new[] { a, -a, b, -b })));
        return (double)(float)Weights[0] * n[0] + (double)(float)Weights[1] * n[2];
    }

    /// <summary>
    /// p(positive) for a text of n words of which <paramref name="kept"/> stay and the others are [PAD]: its L = n + 2
    /// positions are [CLS], the n words or pads, [SEP].
    /// </summary>
    public static double ProbabilityOfPositive(IReadOnlyCollection<string> kept, int n)
    {
        double sum = Value("[CLS]") + Value("[SEP]") + kept.Sum(Value) + (n - kept.Count) * Value("[PAD]");
        double z = (double)(float)Bias[1] - (double)(float)Bias[0] + sum / (n + 2);
        return 1 / (1 + Math.Exp(-z));
    }

    public void Dispose()
    {
        Loaded.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
