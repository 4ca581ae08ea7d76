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
    };

    /// <summary>The bert-base-uncased shape: 12 layers, hidden 768, 12 heads, 3072, vocab 30522.</summary>
    public static ModelConfig BertBase(int labels = 2) => BertConfig(12, 768, 12, 3072, 30522, labels);

    public static TransformerClassifier Create(ModelConfig c, long seed = 0, double std = 0.02, bool stress = false)
    {
        var gen = new Generator((ulong)seed);
        Tensor W(params long[] shape) => (randn(shape, generator: gen) * std);
        Tensor Bias(long n) => (stress ? randn(new[] { n }, generator: gen) * std : zeros(n));
        Tensor Gamma(long n) => (stress ? 1 + randn(new[] { n }, generator: gen) * 0.2 : ones(n));
        Tensor Beta(long n) => (stress ? randn(new[] { n }, generator: gen) * 0.1 : zeros(n));
        long h = c.HiddenSize, inter = c.IntermediateSize, n = c.Labels.Count;
        var layers = Enumerable.Range(0, c.Layers).Select(_ => new EncoderLayerWeights(
            W(h, h), Bias(h), W(h, h), Bias(h), W(h, h), Bias(h), W(h, h), Bias(h), Gamma(h), Beta(h),
            W(inter, h), Bias(inter), W(h, inter), Bias(h), Gamma(h), Beta(h))).ToList();
        bool classifier = c.Architecture != "BertModel" && n > 0;
        bool dense = c.Head != HeadKind.MeanPooling;
        return new TransformerClassifier(c, W(c.VocabSize, h), W(c.MaxPositions, h),
            c.Family == ModelFamily.DistilBert ? null : W(c.TypeVocabSize, h), Gamma(h), Beta(h), layers,
            dense ? W(h, h) : null, dense ? Bias(h) : null, classifier ? W(n, h) : null, classifier ? Bias(n) : null);
    }

    /// <summary>Writes a model folder (config.json, model.safetensors, a vocab.txt naming the specials) that <see cref="ModelLoader"/> reads back.</summary>
    public static void Save(TransformerClassifier model, string dir)
    {
        Directory.CreateDirectory(dir);
        var c = model.Config;
        var config = new Dictionary<string, object>
        {
            ["architectures"] = new[] { c.Architecture },
            ["model_type"] = c.ModelType,
            ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = c.HiddenSize,
            ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads,
            ["intermediate_size"] = c.IntermediateSize,
            ["hidden_act"] = c.HiddenAct,
            ["layer_norm_eps"] = c.LayerNormEps,
            ["max_position_embeddings"] = c.MaxPositions,
            ["type_vocab_size"] = c.TypeVocabSize,
            ["pad_token_id"] = c.PadTokenId,
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
