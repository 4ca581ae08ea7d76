using System.Text.Json;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>Which classifier family a checkpoint belongs to; decides key names, positions and head.</summary>
public enum ModelFamily { Bert, DistilBert, Roberta }

/// <summary>What sits on top of the encoder.</summary>
public enum HeadKind
{
    /// <summary>BERT: tanh pooler on token 0, then a linear classifier.</summary>
    BertPooler,
    /// <summary>DistilBERT: token 0 → pre_classifier → ReLU → classifier.</summary>
    DistilBertPreClassifier,
    /// <summary>RoBERTa: token 0 → dense → tanh → out_proj.</summary>
    RobertaClassificationHead,
    /// <summary>Bare encoder (BertModel): masked mean pooling; with a `classifier.*` head, a linear classifier on it.</summary>
    MeanPooling,
}

/// <summary>
/// The parts of a Hugging Face <c>config.json</c> the engine uses, with each family's own field names
/// (DistilBERT says dim/n_layers/n_heads/hidden_dim/activation) mapped onto one set.
/// </summary>
public sealed record ModelConfig
{
    public required ModelFamily Family { get; init; }
    public required string ModelType { get; init; }
    public required string Architecture { get; init; }
    public required HeadKind Head { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int IntermediateSize { get; init; }
    public required string HiddenAct { get; init; }
    public required double LayerNormEps { get; init; }
    public required int MaxPositions { get; init; }
    public required int TypeVocabSize { get; init; }
    public required int PadTokenId { get; init; }
    public required IReadOnlyList<string> Labels { get; init; }

    /// <summary>Longest input the position table allows (RoBERTa reserves pad+1 rows).</summary>
    public int MaxSequenceLength => Family == ModelFamily.Roberta ? MaxPositions - PadTokenId - 1 : MaxPositions;

    public static readonly string[] SupportedArchitectures =
    {
        "BertForSequenceClassification", "DistilBertForSequenceClassification", "RobertaForSequenceClassification",
        "BertModel", "MeanPoolingClassifier",
    };

    public static readonly string[] SupportedActivations = { "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh" };

    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"Model config not found: {path}", path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new ModelLoadException($"Invalid JSON in {path}: {e.Message}", path, inner: e); }
        using (doc) return Parse(doc.RootElement, path);
    }

    public static ModelConfig Parse(JsonElement root, string path)
    {
        string modelType = Str(root, "model_type", path) ?? throw Missing(path, "model_type");
        string architecture = root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0
            ? archs[0].GetString() ?? ""
            : modelType switch { "bert" => "BertModel", _ => "" };
        if (!SupportedArchitectures.Contains(architecture))
            throw new ModelLoadException(
                $"Unknown architecture '{architecture}' in {path} (field 'architectures'); supported: {string.Join(", ", SupportedArchitectures)}",
                path, "architectures");

        var family = architecture switch
        {
            "DistilBertForSequenceClassification" => ModelFamily.DistilBert,
            "RobertaForSequenceClassification" => ModelFamily.Roberta,
            _ => ModelFamily.Bert,
        };
        var head = architecture switch
        {
            "BertForSequenceClassification" => HeadKind.BertPooler,
            "DistilBertForSequenceClassification" => HeadKind.DistilBertPreClassifier,
            "RobertaForSequenceClassification" => HeadKind.RobertaClassificationHead,
            _ => HeadKind.MeanPooling,
        };
        bool distil = family == ModelFamily.DistilBert;
        int hidden = Int(root, distil ? "dim" : "hidden_size", path);
        int numLabels = 0;
        var labels = new List<string>();
        if (root.TryGetProperty("id2label", out var id2label) && id2label.ValueKind == JsonValueKind.Object)
        {
            var pairs = new SortedDictionary<int, string>();
            foreach (var p in id2label.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out var idx) || idx < 0)
                    throw new ModelLoadException($"Field 'id2label' in {path} has a non-integer key '{p.Name}'", path, "id2label");
                pairs[idx] = p.Value.GetString() ?? $"LABEL_{idx}";
            }
            numLabels = pairs.Count;
            for (int i = 0; i < numLabels; i++)
                labels.Add(pairs.TryGetValue(i, out var l) ? l : throw new ModelLoadException($"Field 'id2label' in {path} skips index {i}", path, "id2label"));
        }
        else if (root.TryGetProperty("num_labels", out var nl) && nl.TryGetInt32(out numLabels))
        {
            for (int i = 0; i < numLabels; i++) labels.Add($"LABEL_{i}");
        }

        var hiddenAct = Str(root, distil ? "activation" : "hidden_act", path) ?? "gelu";
        if (!SupportedActivations.Contains(hiddenAct))
            throw new ModelLoadException($"Unsupported {(distil ? "activation" : "hidden_act")} '{hiddenAct}' in {path}; supported: {string.Join(", ", SupportedActivations)}",
                path, distil ? "activation" : "hidden_act");

        return new ModelConfig
        {
            Family = family,
            ModelType = modelType,
            Architecture = architecture,
            Head = head,
            VocabSize = Int(root, "vocab_size", path),
            HiddenSize = hidden,
            Layers = Int(root, distil ? "n_layers" : "num_hidden_layers", path),
            Heads = Int(root, distil ? "n_heads" : "num_attention_heads", path),
            IntermediateSize = Int(root, distil ? "hidden_dim" : "intermediate_size", path),
            HiddenAct = hiddenAct,
            // DistilBERT hard-codes 1e-12 in HF's code; it is not in its config.
            LayerNormEps = root.TryGetProperty("layer_norm_eps", out var eps) ? eps.GetDouble() : 1e-12,
            MaxPositions = Int(root, "max_position_embeddings", path),
            TypeVocabSize = distil ? 0 : (root.TryGetProperty("type_vocab_size", out var tv) ? tv.GetInt32() : 2),
            PadTokenId = root.TryGetProperty("pad_token_id", out var pad) && pad.ValueKind == JsonValueKind.Number ? pad.GetInt32() : (family == ModelFamily.Roberta ? 1 : 0),
            Labels = labels,
        };
    }

    private static ModelLoadException Missing(string path, string field) =>
        new($"Missing field '{field}' in {path}", path, field);

    private static string? Str(JsonElement root, string field, string path) =>
        root.TryGetProperty(field, out var v) ? (v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ModelLoadException($"Field '{field}' in {path} must be a string", path, field)) : null;

    private static int Int(JsonElement root, string field, string path)
    {
        if (!root.TryGetProperty(field, out var v)) throw Missing(path, field);
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i) || i <= 0)
            throw new ModelLoadException($"Field '{field}' in {path} must be a positive integer, got {v}", path, field);
        return i;
    }
}
