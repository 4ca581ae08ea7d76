using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Attribution;

/// <summary>
/// Two small random BERT folders written once for the hostile-input tests: "huge-logits" (std 0.1 stress model whose
/// classifier weights are scaled by 1e4, logits of order 1e2–1e3) and "std1" (stress model with N(0, 1) weights:
/// saturated GELU/tanh, peaky attention). Both get a vocab.txt with some real words (the rest [unusedN]).
/// </summary>
public sealed class HostileModels : IDisposable
{
    public const int MaxPositions = 32;
    public static readonly string[] Words =
        { "the", "movie", "was", "great", "bad", "not", "a", "film", "good", "plot", "!", "?", ".", ",", "very", "boring" };

    private readonly string _root = Path.Combine(Path.GetTempPath(), "hostile-models-" + Guid.NewGuid().ToString("N"));
    public Dictionary<string, LoadedModel> Models { get; } = new();

    public HostileModels()
    {
        var config = RandomModels.BertConfig(layers: 2, hidden: 16, heads: 2, intermediate: 32, vocab: 1000, labels: 3, maxPositions: MaxPositions);
        foreach (var (name, std, scale) in new[] { ("huge-logits", 0.1, 1e4), ("std1", 1.0, 1.0) })
        {
            var dir = Path.Combine(_root, name);
            Directory.CreateDirectory(dir);
            var vocab = Enumerable.Range(0, config.VocabSize).Select(i => i switch
            {
                0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
                >= 200 and < 216 => Words[i - 200],
                _ => $"[unused{i}]",
            });
            File.WriteAllLines(Path.Combine(dir, "vocab.txt"), vocab);
            using (var model = RandomModels.Create(config, seed: 3, std: std, stress: true))
            {
                using (no_grad()) model.Weights["cls"].mul_(scale);
                RandomModels.Save(model, dir);
            }
            Models[name] = LoadedModel.Load(dir, CPU);
        }
    }

    public void Dispose()
    {
        foreach (var m in Models.Values) m.Dispose();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>No NaN or Inf in any output, whatever the method, output, softmax rule and input.</summary>
public class HostileInputTests(HostileModels fixture, ITestOutputHelper output) : IClassFixture<HostileModels>
{
    private static readonly string LongText = string.Join(" ", Enumerable.Range(0, 400).Select(i => HostileModels.Words[i % HostileModels.Words.Length]));

    /// <summary>Texts: ordinary, identical to the [PAD] reference, special tokens typed in, unknown words, very long.</summary>
    private static readonly string[] Texts =
    {
        "the movie was great",
        "[PAD] [PAD]",            // [CLS] [PAD] [PAD] [SEP]: identical to the reference
        "[CLS]",                  // [CLS] [CLS] [SEP]
        "[SEP] [MASK] [UNK]",
        "日本語 😀 ÉMOJI zzzz",      // all [UNK]
        "! ! ! ? ? ? . . .",
        LongText,
    };

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in new[] { "huge-logits", "std1" })
            foreach (var method in new[] { "deeplift", "deeplift-shap", "integrated-gradients", "gradient-shap", "saliency", "input-x-gradient" })
                data.Add(model, method);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void OutputsAreFinite(string modelName, string method)
    {
        var explainer = new TextExplainer(fixture.Models[modelName]);
        bool deepLift = method.StartsWith("deeplift", StringComparison.Ordinal);
        // The softmax rule only matters to DeepLift; deeplift-shap runs the same code per reference, so exact is enough there.
        var rules = method == "deeplift" ? new[] { "exact", "rescale", "row-mean" } : new[] { "exact" };
        var precisions = method == "deeplift" ? new[] { "float32", "float64" } : new[] { "float32" };
        var references = method.EndsWith("shap", StringComparison.Ordinal) ? new[] { "pad", "mask", "zero" } : new[] { "pad" };
        foreach (var outputKind in new[] { "logit", "centered-logit", "probability" })
            foreach (var rule in rules)
                foreach (var precision in precisions.Where(p => p == "float32" || rule == "exact"))
                {
                    var request = new ExplainRequest
                    {
                        Method = method, Output = outputKind, SoftmaxRule = rule, Precision = precision,
                        Steps = 4, Samples = 2, References = references,
                    };
                    var results = explainer.Explain(Texts, request);
                    string name = $"{modelName} {method} {outputKind} {rule} {precision}";
                    Assert.Equal(Texts.Length, results.Count);
                    double worstRelative = 0;
                    for (int i = 0; i < results.Count; i++)
                    {
                        var e = results[i];
                        Assert.True(e.Scores.All(double.IsFinite), $"{name}, text {i}: non-finite score");
                        Assert.True(double.IsFinite(e.Fx) && double.IsFinite(e.Fx0) && double.IsFinite(e.Delta) && double.IsFinite(e.RelativeDelta),
                            $"{name}, text {i}: Fx {e.Fx}, Fx0 {e.Fx0}, delta {e.Delta}, relative {e.RelativeDelta}");
                        Assert.True(e.Prediction.Probability is >= 0 and <= 1, $"{name}, text {i}: probability {e.Prediction.Probability}");
                        Assert.Equal(e.Tokens.Length, e.Scores.Length);
                        Assert.True(e.Tokens.Length <= HostileModels.MaxPositions);
                        if (method != "saliency" && method != "input-x-gradient") worstRelative = Math.Max(worstRelative, e.RelativeDelta);
                    }
                    output.WriteLine($"{name}: logits ~{Math.Abs(results[0].Fx):G3}, worst relative delta {worstRelative:E2}");

                    // Text 1 is its own [PAD] reference: nothing changes, nothing is attributed.
                    var same = results[1];
                    Assert.Equal(new[] { "[CLS]", "[PAD]", "[PAD]", "[SEP]" }, same.Tokens);
                    if (method is "deeplift" or "integrated-gradients")
                    {
                        Assert.All(same.Scores, s => Assert.Equal(0.0, s));
                        Assert.Equal(0.0, same.Fx - same.Fx0);
                        Assert.Equal(0.0, same.Delta);
                        Assert.Equal(0.0, same.RelativeDelta);
                    }

                    // The long text is truncated to the model's maximum and says so.
                    var longOne = results[^1];
                    Assert.True(longOne.Truncated);
                    Assert.Equal(HostileModels.MaxPositions, longOne.Tokens.Length);
                    Assert.Equal("[SEP]", longOne.Tokens[^1]);
                    Assert.All(results.Take(results.Count - 1), r => Assert.False(r.Truncated));

                    // Exact DeepLift keeps its promise even here (float64: rounding level; float32: loose).
                    if (deepLift && rule == "exact")
                        foreach (var e in results)
                            Assert.True(Math.Abs(e.Delta) <= (precision == "float64" ? 1e-9 : 1e-3) * Math.Max(1, Math.Max(Math.Abs(e.Fx), Math.Abs(e.Fx0))),
                                $"{name}: delta {e.Delta:E2} with f(x) {e.Fx:G4}, f(x0) {e.Fx0:G4}");
                }
    }

    /// <summary>A requested max length below the model's is respected; a text of only special tokens or invisible characters works.</summary>
    [Fact]
    public void MaxLengthAndDegenerateTexts()
    {
        var explainer = new TextExplainer(fixture.Models["std1"]);
        var results = explainer.Explain(new[] { LongText, "\u200b", "[CLS]" }, new ExplainRequest { MaxLength = 16, Output = "probability" });
        Assert.Equal(16, results[0].Tokens.Length);
        Assert.True(results[0].Truncated);
        Assert.False(results[2].Truncated);
        foreach (var e in results)
        {
            output.WriteLine($"{string.Join(" ", e.Tokens)}: delta {e.Delta:E2}");
            Assert.True(e.Scores.All(double.IsFinite) && double.IsFinite(e.Delta));
        }
        // "[CLS]" typed in is the [CLS] token, not text: [CLS] [CLS] [SEP].
        Assert.Equal(new[] { "[CLS]", "[CLS]", "[SEP]" }, results[2].Tokens);
    }
}
