using System.Text.Json;
using AttributionFleet.Engine.Checkpoints;
using AttributionFleet.Engine.Models;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Architectures.DebertaV2;

/// <summary>
/// DeBERTa-v2/v3's own config fields (HF DebertaV2Config), carried in <see cref="ModelConfig.FamilySettings"/>.
/// <see cref="MaxRelativePositions"/> is already resolved (max_position_embeddings when config.json says &lt; 1);
/// <see cref="AttentionSpan"/> is HF's pos_ebd_size (position_buckets when &gt; 0, else max_relative_positions), half the
/// rows of rel_embeddings.
/// </summary>
public sealed record DebertaV2Settings(
    int MaxRelativePositions,
    int PositionBuckets,
    bool ShareAttKey,
    bool ContentToPosition,
    bool PositionToContent,
    bool NormRelEmbeddings,
    string PoolerActivation)
{
    public int AttentionSpan => PositionBuckets > 0 ? PositionBuckets : MaxRelativePositions;

    /// <summary>1 + |pos_att_type|: the scores are divided by sqrt(head size × this).</summary>
    public int ScaleFactor => 1 + (ContentToPosition ? 1 : 0) + (PositionToContent ? 1 : 0);
}

/// <summary>
/// DebertaV2ForSequenceClassification (HF modeling_deberta_v2.py) as DeBERTa-v3 and mDeBERTa use it: relative attention,
/// no absolute positions in the input (position_biased_input false), no token types; keys under <c>deberta.</c>,
/// pooler and classifier outside; SentencePiece tokenizer (spm.model, ids as they are: [PAD]=0 [CLS]=1 [SEP]=2).
/// Roles: word, emb.norm.{w,b}, L{i}.{q,k,v,o,ln1.w,ln1.b,ff1,ff2,ln2.w,ln2.b (with .b biases), posk[.b], posq[.b]}, rel,
/// rel.norm.{w,b}, dense[.b], cls[.b].
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
                $"{configPath} has model_type 'deberta-v2' but no 'architectures', and the weights do not decide the head: {Names[0]} needs 'pooler.dense.weight' and 'classifier.weight' (a bare DebertaV2Model or a masked-LM checkpoint is not supported). Add \"architectures\": [...] to config.json, or use a checkpoint with its head.",
                configPath, "architectures");

    public ModelConfig ParseConfig(JsonElement root, string architecture, string path)
    {
        int hidden = ConfigFields.Int(root, "hidden_size", path);
        int heads = ConfigFields.Int(root, "num_attention_heads", path);
        if (hidden % heads != 0)
            throw new ModelLoadException($"{path}: hidden_size {hidden} is not a multiple of the {heads} attention heads", path, "num_attention_heads");
        int maxPositions = ConfigFields.IntOr(root, "max_position_embeddings", path, 512);

        // What the forward below does not compute: refused by field rather than computed wrongly. HF's defaults
        // (relative_attention false, position_biased_input true) are DeBERTa-v2's absolute-position variant.
        if (!Bool(root, "relative_attention", path, false))
            throw Unsupported(path, "relative_attention", "must be true (DeBERTa-v3 / mDeBERTa relative attention); models without relative attention are not supported");
        if (Bool(root, "position_biased_input", path, true))
            throw Unsupported(path, "position_biased_input", "must be false (DeBERTa-v3 / mDeBERTa); absolute position embeddings in the input are not supported");
        if (ConfigFields.TokenId(root, "type_vocab_size", path, 0) != 0)
            throw Unsupported(path, "type_vocab_size", "must be 0; token type embeddings are not supported");
        if (ConfigFields.IntOr(root, "embedding_size", path, hidden) != hidden)
            throw Unsupported(path, "embedding_size", $"must equal hidden_size {hidden}; the embedding projection is not supported");
        if (root.TryGetProperty("conv_kernel_size", out var conv) && conv.ValueKind == JsonValueKind.Number && conv.GetInt32() > 0)
            throw Unsupported(path, "conv_kernel_size", "must be 0; the convolution layer of deberta-v2-xlarge is not supported");
        if (ConfigFields.IntOr(root, "attention_head_size", path, hidden / heads) != hidden / heads)
            throw Unsupported(path, "attention_head_size", $"must be hidden_size / num_attention_heads = {hidden / heads}");
        if (ConfigFields.IntOr(root, "pooler_hidden_size", path, hidden) != hidden)
            throw Unsupported(path, "pooler_hidden_size", $"must equal hidden_size {hidden}");

        var types = PositionAttentionTypes(root, path);
        var normRel = (ConfigFields.Str(root, "norm_rel_ebd", path) ?? "none").ToLowerInvariant().Split('|').Select(s => s.Trim()).ToList();
        if (normRel.Any(n => n is not ("none" or "layer_norm")))
            throw Unsupported(path, "norm_rel_ebd", "must be \"none\" or \"layer_norm\"");
        int maxRelative = root.TryGetProperty("max_relative_positions", out var mrp) && mrp.ValueKind == JsonValueKind.Number ? mrp.GetInt32() : -1;
        int buckets = root.TryGetProperty("position_buckets", out var pb) && pb.ValueKind == JsonValueKind.Number ? pb.GetInt32() : -1;
        var settings = new DebertaV2Settings(
            MaxRelativePositions: maxRelative < 1 ? maxPositions : maxRelative,
            PositionBuckets: buckets,
            ShareAttKey: Bool(root, "share_att_key", path, false),
            ContentToPosition: types.Contains("c2p"),
            PositionToContent: types.Contains("p2c"),
            NormRelEmbeddings: normRel.Contains("layer_norm"),
            PoolerActivation: ConfigFields.Activation(root, "pooler_hidden_act", path, "gelu"));
        if (settings.PositionBuckets > 0 && settings.PositionBuckets / 2 >= settings.MaxRelativePositions)
            throw Unsupported(path, "position_buckets", $"({buckets}) / 2 must be below max_relative_positions ({settings.MaxRelativePositions}) for the log buckets");

        var labels = ConfigFields.Labels(root, path);
        if (labels.Count == 0)
            throw new ModelLoadException($"{architecture} needs labels: {path} has neither 'id2label' nor 'num_labels'", path, "id2label");
        return new ModelConfig
        {
            Family = Family,
            ModelType = ConfigFields.Str(root, "model_type", path) ?? ModelTypes[0],
            Architecture = architecture,
            Head = HeadKind.FamilyHead,
            VocabSize = ConfigFields.Int(root, "vocab_size", path),
            HiddenSize = hidden,
            Layers = ConfigFields.Int(root, "num_hidden_layers", path),
            Heads = heads,
            IntermediateSize = ConfigFields.Int(root, "intermediate_size", path),
            HiddenAct = ConfigFields.Activation(root, "hidden_act", path, "gelu"),
            LayerNormEps = ConfigFields.Double(root, "layer_norm_eps", path, 1e-7),
            MaxPositions = maxPositions,
            TypeVocabSize = 0,
            PadTokenId = ConfigFields.TokenId(root, "pad_token_id", path, 0),
            Labels = labels,
            Problem = ConfigFields.Problem(root, path, labels.Count),
            FamilySettings = settings,
        };
    }

    /// <summary>pos_att_type as a list (["p2c", "c2p"]) or HF's older string form ("p2c|c2p").</summary>
    private static HashSet<string> PositionAttentionTypes(JsonElement root, string path)
    {
        var types = new HashSet<string>();
        if (!root.TryGetProperty("pos_att_type", out var p) || p.ValueKind == JsonValueKind.Null) return types;
        IEnumerable<string?> raw = p.ValueKind switch
        {
            JsonValueKind.Array => p.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.String ? t.GetString() : null),
            JsonValueKind.String => p.GetString()!.Split('|'),
            _ => throw Unsupported(path, "pos_att_type", "must be a list of \"c2p\" / \"p2c\""),
        };
        foreach (var t in raw)
        {
            var type = t?.Trim().ToLowerInvariant();
            if (type is not ("c2p" or "p2c"))
                throw Unsupported(path, "pos_att_type", $"entries must be \"c2p\" or \"p2c\", got {(type is null ? "a non-string" : $"\"{type}\"")}");
            types.Add(type);
        }
        return types;
    }

    private static ModelLoadException Unsupported(string path, string field, string what) =>
        new($"{path}: '{field}' {what}; this model would be computed wrongly", path, field);

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

    public static DebertaV2Settings SettingsOf(ModelConfig config) =>
        config.FamilySettings as DebertaV2Settings ?? throw new InvalidOperationException($"{config.Architecture} config carries no DeBERTa-v2 settings");

    public WeightTable Weights(ModelConfig c, bool withClassifier)
    {
        var s = SettingsOf(c);
        long h = c.HiddenSize, inter = c.IntermediateSize, n = c.Labels.Count;
        var roles = new List<WeightRole> { new("word", "embeddings.word_embeddings.weight", new[] { (long)c.VocabSize, h }, WeightKind.Embedding) };
        void Norm(string role, string key, bool inBody = true)
        {
            roles.Add(new(role + ".w", key + ".weight", new[] { h }, WeightKind.NormWeight, inBody));
            roles.Add(new(role + ".b", key + ".bias", new[] { h }, WeightKind.NormBias, inBody));
        }
        void Linear(string role, string key, long rows, long cols, bool inBody = true)
        {
            roles.Add(new(role, key + ".weight", new[] { rows, cols }, WeightKind.Matrix, inBody));
            roles.Add(new(role + ".b", key + ".bias", new[] { rows }, WeightKind.Bias, inBody));
        }
        Norm("emb.norm", "embeddings.LayerNorm");
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"L{i}.", k = $"encoder.layer.{i}.";
            Linear(p + "q", k + "attention.self.query_proj", h, h);
            Linear(p + "k", k + "attention.self.key_proj", h, h);
            Linear(p + "v", k + "attention.self.value_proj", h, h);
            if (!s.ShareAttKey && s.ContentToPosition) Linear(p + "posk", k + "attention.self.pos_key_proj", h, h);
            if (!s.ShareAttKey && s.PositionToContent) Linear(p + "posq", k + "attention.self.pos_query_proj", h, h);
            Linear(p + "o", k + "attention.output.dense", h, h);
            Norm(p + "ln1", k + "attention.output.LayerNorm");
            Linear(p + "ff1", k + "intermediate.dense", inter, h);
            Linear(p + "ff2", k + "output.dense", h, inter);
            Norm(p + "ln2", k + "output.LayerNorm");
        }
        roles.Add(new("rel", "encoder.rel_embeddings.weight", new[] { 2L * s.AttentionSpan, h }, WeightKind.Embedding));
        if (s.NormRelEmbeddings) Norm("rel.norm", "encoder.LayerNorm");
        Linear("dense", "pooler.dense", h, h, inBody: false);
        Linear("cls", "classifier", n, h, inBody: false);
        return new WeightTable("deberta.", roles);
    }

    public bool IsIgnorable(string key, ModelConfig config) => key.EndsWith("embeddings.position_ids", StringComparison.Ordinal);

    public ITextModel Build(ModelConfig config, IReadOnlyDictionary<string, Tensor> weights) => new DebertaV2Classifier(config, weights);
}
