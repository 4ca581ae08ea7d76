using System.Text.Json;
using AttributionFleet.Engine.Architectures.PostNormEncoder;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures.DistilBert;

/// <summary>
/// DistilBERT (HF modeling_distilbert.py): its own config names (dim, n_layers, n_heads, hidden_dim, activation) and
/// key names, no token types, head token 0 → pre_classifier → ReLU → classifier.
/// </summary>
public sealed class DistilBertArchitecture : PostNormEncoderArchitecture
{
    public override IReadOnlyList<string> Names { get; } = new[] { "DistilBertForSequenceClassification" };
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "distilbert" };
    public override string TokenizerKind => "wordpiece";
    protected override ModelFamily Family => ModelFamily.DistilBert;
    protected override string BodyPrefix => "distilbert.";
    protected override bool HasTokenTypes => false;
    protected override HeadKind HeadFor(string architecture) => HeadKind.DistilBertPreClassifier;
    protected override string LayerPrefix(int i) => $"transformer.layer.{i}.";

    protected override IReadOnlyDictionary<string, string> LayerKeys { get; } = new Dictionary<string, string>
    {
        ["q"] = "attention.q_lin.weight", ["q.b"] = "attention.q_lin.bias",
        ["k"] = "attention.k_lin.weight", ["k.b"] = "attention.k_lin.bias",
        ["v"] = "attention.v_lin.weight", ["v.b"] = "attention.v_lin.bias",
        ["o"] = "attention.out_lin.weight", ["o.b"] = "attention.out_lin.bias",
        ["ln1.w"] = "sa_layer_norm.weight", ["ln1.b"] = "sa_layer_norm.bias",
        ["ff1"] = "ffn.lin1.weight", ["ff1.b"] = "ffn.lin1.bias",
        ["ff2"] = "ffn.lin2.weight", ["ff2.b"] = "ffn.lin2.bias",
        ["ln2.w"] = "output_layer_norm.weight", ["ln2.b"] = "output_layer_norm.bias",
    };

    public override string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath) =>
        keys.Contains("pre_classifier.weight") && keys.Contains("classifier.weight")
            ? "DistilBertForSequenceClassification"
            : throw Undecided(configPath, "distilbert", "DistilBertForSequenceClassification needs 'pre_classifier.weight' and 'classifier.weight' (a bare DistilBertModel is not supported)");

    public override ModelConfig ParseConfig(JsonElement root, string architecture, string path)
    {
        if (root.TryGetProperty("sinusoidal_pos_embds", out var sin) && sin.ValueKind == JsonValueKind.True)
            throw new ModelLoadException($"{path}: sinusoidal_pos_embds true is not supported (learned positions only)", path, "sinusoidal_pos_embds");
        var labels = ConfigFields.Labels(root, path);
        return Check(new ModelConfig
        {
            Family = Family,
            ModelType = "distilbert",
            Architecture = architecture,
            Head = HeadKind.DistilBertPreClassifier,
            VocabSize = ConfigFields.Int(root, "vocab_size", path),
            HiddenSize = ConfigFields.Int(root, "dim", path),
            Layers = ConfigFields.Int(root, "n_layers", path),
            Heads = ConfigFields.Int(root, "n_heads", path),
            IntermediateSize = ConfigFields.Int(root, "hidden_dim", path),
            HiddenAct = ConfigFields.Activation(root, "activation", path, "gelu"),
            // DistilBERT hard-codes 1e-12 in HF's code; it is not in its config.
            LayerNormEps = 1e-12,
            MaxPositions = ConfigFields.Int(root, "max_position_embeddings", path),
            TypeVocabSize = 0,
            PadTokenId = ConfigFields.TokenId(root, "pad_token_id", path, 0),
            Labels = labels,
            Problem = ConfigFields.Problem(root, path, labels.Count),
        }, path);
    }
}
