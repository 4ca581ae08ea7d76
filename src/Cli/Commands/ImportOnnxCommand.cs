using AttributionFleet.Engine.Onnx;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet import-onnx</c>.</summary>
public sealed record ImportOnnxOptions(string Model, string Vocab, string OutDir);

/// <summary><c>fleet import-onnx MODEL.onnx VOCAB.txt OUTDIR</c></summary>
public static class ImportOnnxCommand
{
    public const string Description = "Import a BERT, DistilBERT, RoBERTa or XLM-R ONNX export (encoder or classifier) and its vocabulary (vocab.txt, tokenizer.json, vocab.json or a SentencePiece model) into a Hugging Face layout folder.";

    public static int Run(ImportOnnxOptions o, TextWriter stdout)
    {
        if (!File.Exists(o.Model)) throw new UsageException($"MODEL {o.Model}: file not found");
        if (!File.Exists(o.Vocab)) throw new UsageException($"VOCAB {o.Vocab}: file not found");
        var report = OnnxBertImporter.Import(o.Model, o.Vocab, o.OutDir);
        stdout.WriteLine($"imported {report.Architecture}{(report.Labels > 0 ? $" ({report.Labels} labels)" : "")}, {report.TensorCount} tensors: {report.Layers} layers, hidden {report.Hidden}, {report.Heads} heads, intermediate {report.Intermediate}, layer_norm_eps {report.LayerNormEps:G} -> {o.OutDir}");
        stdout.WriteLine($"tokenizer: {(report.LowerCase ? "lower-cased" : "cased")} (from {report.CasingSource})");
        return 0;
    }
}
