using AttributionFleet.Engine.Architectures.PostNormEncoder;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures.Electra;

/// <summary>
/// ELECTRA (HF modeling_electra.py): BERT's body under <c>electra.</c>, embeddings of width embedding_size projected
/// to the hidden size by <c>electra.embeddings_project</c> when the two differ, no pooler, head
/// token 0 → classifier.dense → GELU → classifier.out_proj (exact GELU whatever hidden_act says, as in HF's
/// ElectraClassificationHead); WordPiece tokenizer.
/// </summary>
public sealed class ElectraArchitecture : PostNormEncoderArchitecture
{
    public override IReadOnlyList<string> Names { get; } = new[] { "ElectraForSequenceClassification" };
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "electra" };
    public override string TokenizerKind => "wordpiece";
    protected override ModelFamily Family => ModelFamily.Electra;
    protected override string BodyPrefix => "electra.";
    protected override HeadKind HeadFor(string architecture) => HeadKind.ElectraClassificationHead;

    protected override IEnumerable<WeightRole> ProjectionRoles(ModelConfig c)
    {
        if (c.EmbeddingSize == c.HiddenSize) yield break;
        yield return new("proj", "embeddings_project.weight", new[] { (long)c.HiddenSize, c.EmbeddingSize }, WeightKind.Matrix);
        yield return new("proj.b", "embeddings_project.bias", new[] { (long)c.HiddenSize }, WeightKind.Bias);
    }

    public override string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath) =>
        keys.Contains("classifier.dense.weight") && keys.Contains("classifier.out_proj.weight")
            ? Names[0]
            : throw Undecided(configPath, "electra",
                "ElectraForSequenceClassification needs 'classifier.dense.weight' and 'classifier.out_proj.weight' (a discriminator or generator without a classification head is not supported)");
}
