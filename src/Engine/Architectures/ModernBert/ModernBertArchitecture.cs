using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.ModernBert;

/// <summary>How the pooled vector is taken before ModernBERT's head (config.json "classifier_pooling").</summary>
public enum ModernBertPooling { Cls, Mean }

/// <summary>
/// ModernBERT's own config fields (HF ModernBertConfig), carried in <see cref="ModelConfig.FamilySettings"/>.
/// <see cref="SlidingLayers"/>[i]: layer i attends within <c>|i − j| ≤ LocalAttention / 2</c> with
/// <see cref="LocalRopeTheta"/>; the others attend globally with <see cref="GlobalRopeTheta"/>.
/// </summary>
public sealed record ModernBertSettings(
    IReadOnlyList<bool> SlidingLayers,
    int LocalAttention,
    double GlobalRopeTheta,
    double LocalRopeTheta,
    bool NormBias,
    bool AttentionBias,
    bool MlpBias,
    bool ClassifierBias,
    string ClassifierActivation,
    ModernBertPooling Pooling);

/// <summary>
/// ModernBertForSequenceClassification (HF modeling_modernbert.py), padded inputs: keys under <c>model.</c>, head and
/// classifier outside it; BPE tokenizer from tokenizer.json. Roles: word, emb.norm.w[.b], L{i}.{attn_norm.w[.b] (not
/// layer 0), qkv[.b], o[.b], mlp_norm.w[.b], wi[.b], wo[.b]}, final_norm.w[.b], head.dense[.b], head.norm.w[.b], cls, cls.b.
/// </summary>
public sealed class ModernBertArchitecture : IArchitecture
{
    public static readonly ModelFamily Family = new("modernbert");

    public IReadOnlyList<string> Names { get; } = new[] { "ModernBertForSequenceClassification" };
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "modernbert" };
    public string TokenizerKind => "byte-level-bpe";

    public string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath) =>
        keys.Contains("head.dense.weight") && keys.Contains("classifier.weight")
            ? Names[0]
            : throw new ModelLoadException(
                $"{configPath} has model_type 'modernbert' but no 'architectures', and the weights do not decide the head: {Names[0]} needs 'head.dense.weight' and 'classifier.weight' (a bare ModernBertModel or a masked-LM checkpoint is not supported). Add \"architectures\": [...] to config.json, or use a checkpoint with its head.",
                configPath, "architectures");

    public ModelConfig ParseConfig(JsonElement root, string architecture, string path)
    {
        int hidden = ConfigFields.Int(root, "hidden_size", path);
        int heads = ConfigFields.Int(root, "num_attention_heads", path);
        int layers = ConfigFields.Int(root, "num_hidden_layers", path);
        if (hidden % heads != 0)
            throw new ModelLoadException($"{path}: hidden_size {hidden} is not a multiple of the {heads} attention heads", path, "num_attention_heads");
        if (hidden / heads % 2 != 0)
            throw new ModelLoadException($"{path}: the head size {hidden / heads} (hidden_size / num_attention_heads) is odd; rotary embeddings rotate pairs of dimensions", path, "num_attention_heads");
        if (root.TryGetProperty("rope_scaling", out var scaling) && scaling.ValueKind != JsonValueKind.Null)
            throw new ModelLoadException($"{path}: 'rope_scaling' is not supported (only the default rotary embedding); this model's positions would be computed wrongly", path, "rope_scaling");

        var pooling = ConfigFields.Str(root, "classifier_pooling", path) ?? "cls";
        var labels = ConfigFields.Labels(root, path);
        if (labels.Count == 0)
            throw new ModelLoadException($"{architecture} needs labels: {path} has neither 'id2label' nor 'num_labels'", path, "id2label");
        double globalTheta = ConfigFields.Double(root, "global_rope_theta", path, 160000.0);
        // HF: a null local_rope_theta means the local layers use the global theta.
        double localTheta = root.TryGetProperty("local_rope_theta", out var lt) && lt.ValueKind == JsonValueKind.Null
            ? globalTheta
            : ConfigFields.Double(root, "local_rope_theta", path, 10000.0);
        (globalTheta, localTheta) = RopeParameters(root, path, globalTheta, localTheta);

        var settings = new ModernBertSettings(
            SlidingLayers: LayerTypes(root, path, layers),
            LocalAttention: ConfigFields.IntOr(root, "local_attention", path, 128),
            GlobalRopeTheta: globalTheta,
            LocalRopeTheta: localTheta,
            NormBias: Bool(root, "norm_bias", path, false),
            AttentionBias: Bool(root, "attention_bias", path, false),
            MlpBias: Bool(root, "mlp_bias", path, false),
            ClassifierBias: Bool(root, "classifier_bias", path, false),
            ClassifierActivation: ConfigFields.Activation(root, "classifier_activation", path, "gelu"),
            Pooling: pooling switch
            {
                "cls" => ModernBertPooling.Cls,
                "mean" => ModernBertPooling.Mean,
                _ => throw new ModelLoadException($"{path}: 'classifier_pooling' must be \"cls\" or \"mean\", got \"{pooling}\"", path, "classifier_pooling"),
            });

        return new ModelConfig
        {
            Family = Family,
            ModelType = ConfigFields.Str(root, "model_type", path) ?? ModelTypes[0],
            Architecture = architecture,
            Head = HeadKind.FamilyHead,
            VocabSize = ConfigFields.Int(root, "vocab_size", path),
            HiddenSize = hidden,
            Layers = layers,
            Heads = heads,
            IntermediateSize = ConfigFields.Int(root, "intermediate_size", path),
            HiddenAct = ConfigFields.Activation(root, "hidden_activation", path, "gelu"),
            LayerNormEps = ConfigFields.Double(root, "norm_eps", path, 1e-5),
            MaxPositions = ConfigFields.IntOr(root, "max_position_embeddings", path, 8192),
            TypeVocabSize = 0,
            PadTokenId = ConfigFields.TokenId(root, "pad_token_id", path, 50283),
            Labels = labels,
            Problem = ConfigFields.Problem(root, path, labels.Count),
            FamilySettings = settings,
        };
    }

    /// <summary>
    /// Which layers slide: config.json's "layer_types" (transformers ≥ 5) when present, else HF's rule
    /// <c>i % global_attn_every_n_layers != 0</c>.
    /// </summary>
    private static bool[] LayerTypes(JsonElement root, string path, int layers)
    {
        if (root.TryGetProperty("layer_types", out var types) && types.ValueKind != JsonValueKind.Null)
        {
            if (types.ValueKind != JsonValueKind.Array || types.GetArrayLength() != layers)
                throw new ModelLoadException($"{path}: 'layer_types' must be a list of {layers} entries (one per layer)", path, "layer_types");
            return types.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.String ? t.GetString() : null).Select(t => t switch
            {
                "sliding_attention" => true,
                "full_attention" => false,
                _ => throw new ModelLoadException($"{path}: 'layer_types' entries must be \"full_attention\" or \"sliding_attention\", got {t ?? "a non-string"}", path, "layer_types"),
            }).ToArray();
        }
        int every = ConfigFields.IntOr(root, "global_attn_every_n_layers", path, 3);
        return Enumerable.Range(0, layers).Select(i => i % every != 0).ToArray();
    }

    /// <summary>transformers ≥ 5 writes the thetas as rope_parameters {full_attention, sliding_attention}: {rope_type, rope_theta}.</summary>
    private static (double Global, double Local) RopeParameters(JsonElement root, string path, double global, double local)
    {
        if (!root.TryGetProperty("rope_parameters", out var rope) || rope.ValueKind == JsonValueKind.Null) return (global, local);
        if (rope.ValueKind != JsonValueKind.Object)
            throw new ModelLoadException($"{path}: 'rope_parameters' must be an object", path, "rope_parameters");
        double Theta(string kind, double fallback)
        {
            if (!rope.TryGetProperty(kind, out var p) || p.ValueKind == JsonValueKind.Null) return fallback;
            var type = ConfigFields.Str(p, "rope_type", path) ?? "default";
            if (type != "default")
                throw new ModelLoadException($"{path}: rope_parameters.{kind}.rope_type '{type}' is not supported (only 'default'); this model's positions would be computed wrongly", path, "rope_parameters");
            return ConfigFields.Double(p, "rope_theta", path, fallback);
        }
        return (Theta("full_attention", global), Theta("sliding_attention", local));
    }

    private static bool Bool(JsonElement root, string field, string path, bool fallback)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ModelLoadException($"Field '{field}' in {path} must be true or false, got {v}", path, field),
        };
    }

    public static ModernBertSettings SettingsOf(ModelConfig config) =>
        config.FamilySettings as ModernBertSettings ?? throw new InvalidOperationException($"{config.Architecture} config carries no ModernBERT settings");

    public WeightTable Weights(ModelConfig c, bool withClassifier)
    {
        var s = SettingsOf(c);
        long h = c.HiddenSize, inter = c.IntermediateSize, n = c.Labels.Count;
        var roles = new List<WeightRole> { new("word", "embeddings.tok_embeddings.weight", new[] { (long)c.VocabSize, h }, WeightKind.Embedding) };
        void Norm(string role, string key, bool inBody = true)
        {
            roles.Add(new(role + ".w", key + ".weight", new[] { h }, WeightKind.NormWeight, inBody));
            if (s.NormBias) roles.Add(new(role + ".b", key + ".bias", new[] { h }, WeightKind.NormBias, inBody));
        }
        void Linear(string role, string key, long rows, long cols, bool bias, bool inBody = true)
        {
            roles.Add(new(role, key + ".weight", new[] { rows, cols }, WeightKind.Matrix, inBody));
            if (bias) roles.Add(new(role + ".b", key + ".bias", new[] { rows }, WeightKind.Bias, inBody));
        }
        Norm("emb.norm", "embeddings.norm");
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"L{i}.", k = $"layers.{i}.";
            // HF: layer 0's attn_norm is Identity (the embeddings were just normalized).
            if (i > 0) Norm(p + "attn_norm", k + "attn_norm");
            Linear(p + "qkv", k + "attn.Wqkv", 3 * h, h, s.AttentionBias);
            Linear(p + "o", k + "attn.Wo", h, h, s.AttentionBias);
            Norm(p + "mlp_norm", k + "mlp_norm");
            Linear(p + "wi", k + "mlp.Wi", 2 * inter, h, s.MlpBias);
            Linear(p + "wo", k + "mlp.Wo", h, inter, s.MlpBias);
        }
        Norm("final_norm", "final_norm");
        Linear("head.dense", "head.dense", h, h, s.ClassifierBias, inBody: false);
        Norm("head.norm", "head.norm", inBody: false);
        Linear("cls", "classifier", n, h, bias: true, inBody: false);
        return new WeightTable("model.", roles);
    }

    public bool IsIgnorable(string key, ModelConfig config) => false;

    public ITextModel Build(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights) => new ModernBertClassifier(config, weights);
}
