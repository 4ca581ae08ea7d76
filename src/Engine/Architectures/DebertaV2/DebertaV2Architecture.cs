using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DeBERTa-v2's own config fields (HF configuration_deberta_v2.py), resolved as modeling_deberta_v2.py resolves them.
/// <see cref="AttentionSpan"/>: the relative distances the tables cover on each side (position_buckets when set, else
/// max_relative_positions, which itself falls back to max_position_embeddings).
/// </summary>
public sealed record DebertaV2Settings(
    bool PositionBiasedInput,
    bool RelativeAttention,
    int PositionBuckets,
    int MaxRelativePositions,
    bool ContentToPosition,
    bool PositionToContent,
    bool ShareAttentionKey,
    bool NormalizeRelativeEmbeddings,
    string PoolerActivation)
{
    public int AttentionSpan => PositionBuckets > 0 ? PositionBuckets : MaxRelativePositions;

    /// <summary>HF's scale_factor: 1 + one for each of c2p and p2c named in pos_att_type (whether or not relative_attention is on).</summary>
    public int ScaleFactor => 1 + (ContentToPosition ? 1 : 0) + (PositionToContent ? 1 : 0);
}

/// <summary>
/// DeBERTa-v2 / DeBERTa-v3 / mDeBERTa (HF modeling_deberta_v2.py): embeddings without absolute positions
/// (position_biased_input false) normalised and multiplied by the mask, disentangled self-attention (content→content
/// plus content→position and position→content against the LayerNorm'd relative embeddings, log-bucketed relative
/// positions), post-LayerNorm blocks, ContextPooler (token 0 → dense → pooler_hidden_act) and the classifier;
/// SentencePiece tokenizer with DeBERTa-v3's ids ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3).
/// Roles: word, position, type, proj, norm.w, norm.b, rel, rel.norm.w, rel.norm.b,
/// L{i}.{q,q.b,k,k.b,v,v.b,pk,pk.b,pq,pq.b,o,o.b,ln1.w,ln1.b,ff1,ff1.b,ff2,ff2.b,ln2.w,ln2.b}, dense, dense.b, cls, cls.b.
/// </summary>
public sealed class DebertaV2Architecture : IArchitecture
{
    public static readonly ModelFamily Family = new("deberta-v2");

    public IReadOnlyList<string> Names { get; } = new[] { "DebertaV2ForSequenceClassification" };
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "deberta-v2" };
    public string TokenizerKind => "sentencepiece";

    public string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath) =>
        keys.Contains("pooler.dense.weight") && keys.Contains("classifier.weight")
            ? Names[0]
            : throw new ModelLoadException(
                $"{configPath} has model_type 'deberta-v2' but no 'architectures', and the weights do not decide the head: " +
                "DebertaV2ForSequenceClassification needs 'pooler.dense.weight' and 'classifier.weight' (a bare DeBERTa encoder or masked-LM checkpoint is not supported). " +
                "Add \"architectures\": [...] to config.json, or use a checkpoint with its head.", configPath, "architectures");

    public ModelConfig ParseConfig(JsonElement root, string architecture, string path)
    {
        int hidden = ConfigFields.Int(root, "hidden_size", path);
        int heads = ConfigFields.Int(root, "num_attention_heads", path);
        int maxPositions = ConfigFields.IntOr(root, "max_position_embeddings", path, 512);
        if (hidden % heads != 0)
            throw new ModelLoadException($"{path}: hidden size {hidden} is not a multiple of the {heads} attention heads", path, "num_attention_heads");
        if (SignedInt(root, "attention_head_size", path, hidden / heads) != hidden / heads)
            throw new ModelLoadException($"{path}: attention_head_size other than hidden_size / num_attention_heads ({hidden / heads}) is not supported", path, "attention_head_size");
        if (SignedInt(root, "conv_kernel_size", path, 0) > 0)
            throw new ModelLoadException($"{path}: conv_kernel_size > 0 (DeBERTa-v2-xlarge's convolution after the first layer) is not supported", path, "conv_kernel_size");
        if (SignedInt(root, "pooler_hidden_size", path, hidden) != hidden)
            throw new ModelLoadException($"{path}: pooler_hidden_size must equal hidden_size ({hidden}): ContextPooler's dense layer reads the hidden state of token 0", path, "pooler_hidden_size");

        bool relative = Bool(root, "relative_attention", path, false);
        // Every DeBERTa-v2/v3/mDeBERTa checkpoint sets it; without it the body has no position information at all
        // (position_biased_input false) and HF still scales by 1 + |pos_att_type|: refused rather than computed untested.
        if (!relative)
            throw new ModelLoadException($"{path}: relative_attention false (or absent) is not supported; DeBERTa-v2/v3 checkpoints set \"relative_attention\": true", path, "relative_attention");
        int maxRelative = SignedInt(root, "max_relative_positions", path, -1);
        if (maxRelative < 1) maxRelative = maxPositions;
        int buckets = SignedInt(root, "position_buckets", path, -1);
        var (c2p, p2c) = PositionAttentionTypes(root, path);
        var norms = (ConfigFields.Str(root, "norm_rel_ebd", path) ?? "none").ToLowerInvariant().Split('|').Select(x => x.Trim()).ToList();
        if (norms.Any(n => n is not ("none" or "layer_norm")))
            throw new ModelLoadException($"{path}: norm_rel_ebd '{string.Join("|", norms)}' is not supported (none or layer_norm)", path, "norm_rel_ebd");
        int typeVocab = SignedInt(root, "type_vocab_size", path, 0);
        if (typeVocab < 0) throw new ModelLoadException($"Field 'type_vocab_size' in {path} must be 0 or more, got {typeVocab}", path, "type_vocab_size");

        var settings = new DebertaV2Settings(
            PositionBiasedInput: Bool(root, "position_biased_input", path, true),
            RelativeAttention: relative,
            PositionBuckets: buckets,
            MaxRelativePositions: maxRelative,
            ContentToPosition: c2p,
            PositionToContent: p2c,
            ShareAttentionKey: Bool(root, "share_att_key", path, false),
            NormalizeRelativeEmbeddings: norms.Contains("layer_norm"),
            PoolerActivation: ConfigFields.Activation(root, "pooler_hidden_act", path, "gelu"));
        if (relative && buckets > 0 && buckets / 2 < 2)
            throw new ModelLoadException($"{path}: position_buckets {buckets} is too small for log buckets (at least 4)", path, "position_buckets");

        var labels = ConfigFields.Labels(root, path);
        if (labels.Count == 0)
            throw new ModelLoadException($"{architecture} needs labels: {path} has neither 'id2label' nor 'num_labels'", path, "id2label");
        return new ModelConfig
        {
            Family = Family,
            Positions = PositionScheme.Absolute,
            ModelType = ConfigFields.Str(root, "model_type", path) ?? ModelTypes[0],
            Architecture = architecture,
            Head = HeadKind.ContextPooler,
            VocabSize = ConfigFields.Int(root, "vocab_size", path),
            HiddenSize = hidden,
            EmbeddingSize = ConfigFields.IntOr(root, "embedding_size", path, hidden),
            Layers = ConfigFields.Int(root, "num_hidden_layers", path),
            Heads = heads,
            IntermediateSize = ConfigFields.Int(root, "intermediate_size", path),
            HiddenAct = ConfigFields.Activation(root, "hidden_act", path, "gelu"),
            LayerNormEps = ConfigFields.Double(root, "layer_norm_eps", path, 1e-7),
            MaxPositions = maxPositions,
            TypeVocabSize = typeVocab,
            PadTokenId = ConfigFields.TokenId(root, "pad_token_id", path, 0),
            Labels = labels,
            Problem = ConfigFields.Problem(root, path, labels.Count),
            FamilySettings = settings,
        };
    }

    /// <summary>The settings of a config this architecture parsed.</summary>
    public static DebertaV2Settings SettingsOf(ModelConfig c) =>
        c.FamilySettings as DebertaV2Settings ?? throw new InvalidOperationException($"{c.Architecture} config has no DeBERTa-v2 settings");

    public WeightTable Weights(ModelConfig c, bool withClassifier)
    {
        var s = SettingsOf(c);
        long h = c.HiddenSize, e = c.EmbeddingSize, inter = c.IntermediateSize, n = c.Labels.Count;
        var roles = new List<WeightRole> { new("word", "embeddings.word_embeddings.weight", new[] { (long)c.VocabSize, e }, WeightKind.Embedding) };
        if (s.PositionBiasedInput) roles.Add(new("position", "embeddings.position_embeddings.weight", new[] { (long)c.MaxPositions, e }, WeightKind.Embedding));
        if (c.TypeVocabSize > 0) roles.Add(new("type", "embeddings.token_type_embeddings.weight", new[] { (long)c.TypeVocabSize, e }, WeightKind.Embedding));
        if (e != h) roles.Add(new("proj", "embeddings.embed_proj.weight", new[] { h, e }, WeightKind.Matrix));
        roles.Add(new("norm.w", "embeddings.LayerNorm.weight", new[] { h }, WeightKind.NormWeight));
        roles.Add(new("norm.b", "embeddings.LayerNorm.bias", new[] { h }, WeightKind.NormBias));
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"encoder.layer.{i}.";
            void Linear(string role, string key, long rows, long cols)
            {
                roles.Add(new($"L{i}.{role}", p + key + ".weight", new[] { rows, cols }, WeightKind.Matrix));
                roles.Add(new($"L{i}.{role}.b", p + key + ".bias", new[] { rows }, WeightKind.Bias));
            }
            void Norm(string role, string key)
            {
                roles.Add(new($"L{i}.{role}.w", p + key + ".weight", new[] { h }, WeightKind.NormWeight));
                roles.Add(new($"L{i}.{role}.b", p + key + ".bias", new[] { h }, WeightKind.NormBias));
            }
            Linear("q", "attention.self.query_proj", h, h);
            Linear("k", "attention.self.key_proj", h, h);
            Linear("v", "attention.self.value_proj", h, h);
            if (s.RelativeAttention && !s.ShareAttentionKey)
            {
                if (s.ContentToPosition) Linear("pk", "attention.self.pos_key_proj", h, h);
                if (s.PositionToContent) Linear("pq", "attention.self.pos_query_proj", h, h);
            }
            Linear("o", "attention.output.dense", h, h);
            Norm("ln1", "attention.output.LayerNorm");
            Linear("ff1", "intermediate.dense", inter, h);
            Linear("ff2", "output.dense", h, inter);
            Norm("ln2", "output.LayerNorm");
        }
        if (s.RelativeAttention)
        {
            roles.Add(new("rel", "encoder.rel_embeddings.weight", new[] { 2L * s.AttentionSpan, h }, WeightKind.Embedding));
            if (s.NormalizeRelativeEmbeddings)
            {
                roles.Add(new("rel.norm.w", "encoder.LayerNorm.weight", new[] { h }, WeightKind.NormWeight));
                roles.Add(new("rel.norm.b", "encoder.LayerNorm.bias", new[] { h }, WeightKind.NormBias));
            }
        }
        roles.Add(new("dense", "pooler.dense.weight", new[] { h, h }, WeightKind.Matrix, InBody: false));
        roles.Add(new("dense.b", "pooler.dense.bias", new[] { h }, WeightKind.Bias, InBody: false));
        roles.Add(new("cls", "classifier.weight", new[] { n, h }, WeightKind.Matrix, InBody: false));
        roles.Add(new("cls.b", "classifier.bias", new[] { n }, WeightKind.Bias, InBody: false));
        return new WeightTable("deberta.", roles);
    }

    /// <summary>The position_ids buffer, and position_embeddings a v3 checkpoint may carry unused (HF ignores both too).</summary>
    public bool IsIgnorable(string key, ModelConfig config) =>
        key.EndsWith("embeddings.position_ids", StringComparison.Ordinal) ||
        (!SettingsOf(config).PositionBiasedInput && key.EndsWith("embeddings.position_embeddings.weight", StringComparison.Ordinal));

    public ITextModel Build(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights) => new DebertaV2Classifier(config, weights);

    /// <summary>pos_att_type as a list (["p2c", "c2p"]) or a string ("p2c|c2p"); DeBERTa-v1's p2p is refused.</summary>
    private static (bool C2P, bool P2C) PositionAttentionTypes(JsonElement root, string path)
    {
        var names = new List<string>();
        if (root.TryGetProperty("pos_att_type", out var v))
        {
            if (v.ValueKind == JsonValueKind.String) names.AddRange(v.GetString()!.ToLowerInvariant().Split('|').Select(x => x.Trim()).Where(x => x.Length > 0));
            else if (v.ValueKind == JsonValueKind.Array)
                foreach (var item in v.EnumerateArray())
                    names.Add(item.ValueKind == JsonValueKind.String ? item.GetString()!.Trim().ToLowerInvariant()
                        : throw new ModelLoadException($"Field 'pos_att_type' in {path} must list strings, got {item}", path, "pos_att_type"));
            else if (v.ValueKind != JsonValueKind.Null)
                throw new ModelLoadException($"Field 'pos_att_type' in {path} must be a list or a '|'-separated string, got {v}", path, "pos_att_type");
        }
        foreach (var name in names)
            if (name is not ("c2p" or "p2c"))
                throw new ModelLoadException($"{path}: pos_att_type '{name}' is not supported (c2p and p2c are)", path, "pos_att_type");
        return (names.Contains("c2p"), names.Contains("p2c"));
    }

    /// <summary>An integer field that may be negative or zero (max_relative_positions -1, position_buckets -1, type_vocab_size 0).</summary>
    private static int SignedInt(JsonElement root, string field, string path, int fallback)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i))
            throw new ModelLoadException($"Field '{field}' in {path} must be an integer, got {v}", path, field);
        return i;
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
}
