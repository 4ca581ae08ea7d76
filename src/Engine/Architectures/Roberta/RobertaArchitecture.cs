using AttributionFleet.Engine.Architectures.PostNormEncoder;
using AttributionFleet.Engine.Checkpoints;

namespace AttributionFleet.Engine.Architectures.Roberta;

/// <summary>
/// RoBERTa (HF modeling_roberta.py): BERT's body under <c>roberta.</c>, positions counted after the pad id, head
/// token 0 → dense → tanh → out_proj; byte-level BPE tokenizer.
/// </summary>
public class RobertaArchitecture : PostNormEncoderArchitecture
{
    public override IReadOnlyList<string> Names { get; } = new[] { "RobertaForSequenceClassification" };
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "roberta" };
    public override string TokenizerKind => "byte-level-bpe";
    protected override ModelFamily Family => ModelFamily.Roberta;
    protected override string BodyPrefix => "roberta.";
    protected override int DefaultPadTokenId => 1;
    protected override PositionScheme Positions => PositionScheme.AfterPadding;
    protected override HeadKind HeadFor(string architecture) => HeadKind.RobertaClassificationHead;

    public override string ResolveFromWeights(IReadOnlyCollection<string> keys, string configPath) =>
        keys.Contains("classifier.dense.weight") && keys.Contains("classifier.out_proj.weight")
            ? Names[0]
            : throw Undecided(configPath, ModelTypes[0], $"{Names[0]} needs 'classifier.dense.weight' and 'classifier.out_proj.weight' (a bare encoder of this family is not supported)");
}

/// <summary>XLM-RoBERTa (HF modeling_xlm_roberta.py): RoBERTa's body and head, keys under <c>roberta.</c>; SentencePiece tokenizer.</summary>
public sealed class XlmRobertaArchitecture : RobertaArchitecture
{
    public override IReadOnlyList<string> Names { get; } = new[] { "XLMRobertaForSequenceClassification" };
    public override IReadOnlyList<string> ModelTypes { get; } = new[] { "xlm-roberta" };
    public override string TokenizerKind => "sentencepiece";
    protected override ModelFamily Family => ModelFamily.XlmRoberta;
}
