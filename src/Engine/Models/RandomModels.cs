using AttributionFleet.Engine.Checkpoints;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Models;

/// <summary>
/// Randomly initialised classifiers (N(0, std) weights, zero biases, LayerNorm 1/0 as in HF's init, or
/// random biases and LayerNorm parameters for "stress" models whose logits are of order 1), for tests and
/// benchmarks. Deterministic for a seed.
/// </summary>
public static class RandomModels
{
    public static ModelConfig BertConfig(int layers = 2, int hidden = 64, int heads = 4, int intermediate = 128, int vocab = 1000,
        int labels = 2, int maxPositions = 512, string architecture = "BertForSequenceClassification") => new()
    {
        Family = ModelFamily.Bert,
        ModelType = "bert",
        Architecture = architecture,
        Head = architecture == "BertModel" || architecture == "MeanPoolingClassifier" ? HeadKind.MeanPooling : HeadKind.BertPooler,
        VocabSize = vocab,
        HiddenSize = hidden,
        Layers = layers,
        Heads = heads,
        IntermediateSize = intermediate,
        HiddenAct = "gelu",
        LayerNormEps = 1e-12,
        MaxPositions = maxPositions,
        TypeVocabSize = 2,
        PadTokenId = 0,
        Labels = Enumerable.Range(0, labels).Select(i => $"LABEL_{i}").ToList(),
        Problem = architecture == "BertModel" ? ProblemType.Embedding : labels == 1 ? ProblemType.Regression : ProblemType.SingleLabel,
    };

    /// <summary>The bert-base-uncased shape: 12 layers, hidden 768, 12 heads, 3072, vocab 30522.</summary>
    public static ModelConfig BertBase(int labels = 2) => BertConfig(12, 768, 12, 3072, 30522, labels);

    public static ITextModel Create(ModelConfig c, long seed = 0, double std = 0.02, bool stress = false)
    {
        var gen = new Generator((ulong)seed);
        Tensor W(long[] shape) => randn(shape, generator: gen) * std;
        Tensor Bias(long[] shape) => stress ? randn(shape, generator: gen) * std : zeros(shape);
        Tensor Gamma(long[] shape) => stress ? 1 + randn(shape, generator: gen) * 0.2 : ones(shape);
        Tensor Beta(long[] shape) => stress ? randn(shape, generator: gen) * 0.1 : zeros(shape);
        bool classifier = c.Architecture != "BertModel" && c.Labels.Count > 0;
        var architecture = Architectures.ArchitectureRegistry.Of(c);
        var table = architecture.Weights(c, classifier);
        // Layers first, then embeddings and head, each in table order: the draws (and so the weights for a seed) are
        // the ones this generator always made.
        var order = table.Roles.Where(r => r.Role.StartsWith('L')).Concat(table.Roles.Where(r => !r.Role.StartsWith('L')));
        var weights = new Dictionary<string, Tensor>();
        foreach (var r in order)
            weights[r.Role] = r.Kind switch
            {
                Architectures.WeightKind.Bias => Bias(r.Shape),
                Architectures.WeightKind.NormWeight => Gamma(r.Shape),
                Architectures.WeightKind.NormBias => Beta(r.Shape),
                _ => W(r.Shape),
            };
        return architecture.Build(c, weights);
    }

    /// <summary>Writes a model folder (config.json, model.safetensors, a vocab.txt naming the specials) that <see cref="ModelLoader"/> reads back.</summary>
    public static void Save(ITextModel model, string dir)
    {
        if (model.Config.Family == ModelFamily.DistilBert)
            throw new NotSupportedException("RandomModels.Save writes BERT-style config fields; DistilBERT's differ (dim, n_layers, …)");
        Directory.CreateDirectory(dir);
        var c = model.Config;
        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { c.Architecture },
            ["model_type"] = c.ModelType,
            ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = c.HiddenSize,
            ["embedding_size"] = c.EmbeddingSize,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["intermediate_size"] = c.IntermediateSize,
            ["hidden_act"] = c.HiddenAct,
            ["layer_norm_eps"] = c.LayerNormEps,
            ["max_position_embeddings"] = c.MaxPositions,
            ["type_vocab_size"] = c.TypeVocabSize,
            ["pad_token_id"] = c.PadTokenId,
            ["problem_type"] = c.Problem switch
            {
                ProblemType.MultiLabel => "multi_label_classification",
                ProblemType.Regression => "regression",
                _ => "single_label_classification",
            },
            ["id2label"] = c.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.i.ToString(), p => p.l),
            ["label2id"] = c.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i),
        };
        File.WriteAllText(Path.Combine(dir, ModelLoader.ConfigFile), System.Text.Json.JsonSerializer.Serialize(config, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        ModelLoader.SaveWeights(model, Path.Combine(dir, ModelLoader.WeightsFile));
        var vocabPath = Path.Combine(dir, "vocab.txt");
        if (!File.Exists(vocabPath))
        {
            var vocab = Enumerable.Range(0, c.VocabSize).Select(i => i switch
            {
                0 => "[PAD]", 100 => "[UNK]", 101 => "[CLS]", 102 => "[SEP]", 103 => "[MASK]",
                _ => i < 1000 ? $"[unused{i}]" : $"tok{i}",
            });
            File.WriteAllLines(vocabPath, vocab);
        }
    }
}
