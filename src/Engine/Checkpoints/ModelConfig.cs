using System.Text.Json;
using AttributionFleet.Engine.Architectures;

namespace AttributionFleet.Engine.Checkpoints;

/// <summary>
/// Which family a checkpoint belongs to (its model_type). A name, not a closed list: a new family defines its own value
/// in its folder (<c>new ModelFamily("deberta-v2")</c>); the ones here are those of src/Engine/Architectures.
/// </summary>
public readonly record struct ModelFamily(string Name)
{
    public static readonly ModelFamily Bert = new("bert");
    public static readonly ModelFamily DistilBert = new("distilbert");
    public static readonly ModelFamily Roberta = new("roberta");
    public static readonly ModelFamily XlmRoberta = new("xlm-roberta");
    public static readonly ModelFamily Electra = new("electra");

    public override string ToString() => Name;
}

/// <summary>What sits on top of the encoder.</summary>
public enum HeadKind
{
    /// <summary>BERT: tanh pooler on token 0, then a linear classifier.</summary>
    BertPooler,
    /// <summary>DistilBERT: token 0 → pre_classifier → ReLU → classifier.</summary>
    DistilBertPreClassifier,
    /// <summary>RoBERTa / XLM-R: token 0 → dense → tanh → out_proj.</summary>
    RobertaClassificationHead,
    /// <summary>ELECTRA: token 0 → dense → GELU (exact erf, whatever hidden_act says) → out_proj.</summary>
    ElectraClassificationHead,
    /// <summary>Bare encoder (BertModel): masked mean pooling; with a `classifier.*` head, a linear classifier on it.</summary>
    MeanPooling,
    /// <summary>DeBERTa-v2/v3 ContextPooler: token 0 → pooler.dense → pooler_hidden_act → classifier.</summary>
    ContextPooler,
}

/// <summary>
/// What the head's outputs mean (config.json's <c>problem_type</c>, or <c>num_labels</c> 1 for regression, as
/// Hugging Face decides it): it decides the probabilities predict reports and which targets an explanation may take.
/// </summary>
public enum ProblemType
{
    /// <summary>One label per text: probabilities are the softmax of the logits.</summary>
    SingleLabel,
    /// <summary>Independent labels: each probability is the sigmoid of its own logit.</summary>
    MultiLabel,
    /// <summary>One output that is the value itself (rerankers, STS and quality scorers).</summary>
    Regression,
    /// <summary>A bare encoder: the outputs are the pooled embedding, not scores of labels.</summary>
    Embedding,
}

/// <summary>How a body numbers its positions.</summary>
public enum PositionScheme
{
    /// <summary>0..L−1 (BERT, DistilBERT, ELECTRA).</summary>
    Absolute,
    /// <summary>RoBERTa / XLM-R: real tokens pad+1, pad+2, …; padded positions pad.</summary>
    AfterPadding,
}

/// <summary>
/// The parts of a Hugging Face <c>config.json</c> the engine uses, with each family's own field names
/// (DistilBERT says dim/n_layers/n_heads/hidden_dim/activation) mapped onto one set by the family's
/// <see cref="IArchitecture"/>.
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

    /// <summary>Width of the word embeddings (ELECTRA's embedding_size; the hidden size elsewhere).</summary>
    public int EmbeddingSize { get => _embeddingSize ?? HiddenSize; init => _embeddingSize = value; }
    private readonly int? _embeddingSize;

    /// <summary>What the outputs mean; <see cref="ProblemType.Embedding"/> for a bare encoder without a classifier.</summary>
    public ProblemType Problem { get; init; } = ProblemType.SingleLabel;

    /// <summary>
    /// Settings only one family has (a record defined in that family's folder, e.g. DeBERTa-v2's relative-position
    /// fields), read by its own model; null for the families whose fields are all above.
    /// </summary>
    public object? FamilySettings { get; init; }

    /// <summary>How positions are numbered (set by the family's architecture).</summary>
    public PositionScheme Positions { get; init; } = PositionScheme.Absolute;

    /// <summary>Longest input the position table allows (RoBERTa reserves pad+1 rows).</summary>
    public int MaxSequenceLength => Positions == PositionScheme.AfterPadding ? MaxPositions - PadTokenId - 1 : MaxPositions;

    public static IReadOnlyList<string> SupportedArchitectures => ArchitectureRegistry.SupportedNames;

    public static readonly string[] SupportedActivations = { "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh" };

    /// <summary>Reads config.json; a config without "architectures" that needs the weights to decide is refused (use <see cref="Load(string, IReadOnlyCollection{string})"/>).</summary>
    public static ModelConfig Load(string path) => Load(path, null);

    /// <summary>Reads config.json; <paramref name="weightKeys"/> (the checkpoint's tensor names) resolve a config without "architectures".</summary>
    public static ModelConfig Load(string path, IReadOnlyCollection<string>? weightKeys)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"Model config not found: {path}", path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new ModelLoadException($"Invalid JSON in {path}: {e.Message}", path, inner: e); }
        using (doc) return Parse(doc.RootElement, path, weightKeys);
    }

    public static ModelConfig Parse(JsonElement root, string path, IReadOnlyCollection<string>? weightKeys = null)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new ModelLoadException($"{path} must hold a JSON object", path);
        var (architecture, name) = ArchitectureRegistry.Resolve(root, path, weightKeys);
        return architecture.ParseConfig(root, name, path);
    }
}
