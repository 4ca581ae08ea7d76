using AttributionFleet.Engine.Architectures.PostNormEncoder;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures.Bert;

/// <summary>
/// BERT (HF modeling_bert.py): <c>BertForSequenceClassification</c> (tanh pooler on token 0 → classifier), bare
/// <c>BertModel</c> encoders (masked mean pooling) and <c>MeanPoolingClassifier</c> (mean pooling + a linear head,
/// this engine's own, e.g. the default sentiment model).
/// </summary>
public sealed class BertArchitecture : PostNormEncoderArchitecture
{
    public override IReadOnlyList<string> Names { get; } = new[] { "BertForSequenceClassification", "BertModel", "MeanPoolingClassifier" };
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "bert" };
    public override string TokenizerKind => "wordpiece";
    protected override ModelFamily Family => ModelFamily.Bert;
    protected override string BodyPrefix => "bert.";

    protected override HeadKind HeadFor(string architecture) =>
        architecture == "BertForSequenceClassification" ? HeadKind.BertPooler : HeadKind.MeanPooling;

    /// <summary>
    /// pooler + classifier ⇒ BertForSequenceClassification (what Hugging Face would load); no classifier ⇒ a bare
    /// BertModel (mean pooled; a pooler alone is unused); a classifier without a pooler is ambiguous.
    /// </summary>
    public override string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath)
    {
        bool classifier = keys.Contains("classifier.weight");
        bool pooler = HasAny(keys, "pooler.dense.weight");
        if (classifier && pooler) return "BertForSequenceClassification";
        if (!classifier) return "BertModel";
        throw Undecided(configPath, "bert",
            "it has 'classifier.weight' but no 'pooler.dense.weight' (BertForSequenceClassification needs the pooler; " +
            "a mean-pooling classifier is written with \"architectures\": [\"MeanPoolingClassifier\"])");
    }
}
