using AttributionFleet.Engine.Onnx;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet import-onnx MODEL.onnx VOCAB.txt OUTDIR</c></summary>
public static class ImportOnnxCommand
{
    public const string Usage = "fleet import-onnx MODEL.onnx VOCAB.txt OUTDIR";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, Array.Empty<string>(), Array.Empty<string>());
        if (cl.Positionals.Count != 3) throw new UsageException("usage: " + Usage);
        var report = OnnxBertImporter.Import(cl.Positionals[0], cl.Positionals[1], cl.Positionals[2]);
        stdout.WriteLine($"imported {report.Architecture}{(report.Labels > 0 ? $" ({report.Labels} labels)" : "")}, {report.TensorCount} tensors: {report.Layers} layers, hidden {report.Hidden}, {report.Heads} heads, intermediate {report.Intermediate}, layer_norm_eps {report.LayerNormEps:G} -> {cl.Positionals[2]}");
        stdout.WriteLine($"tokenizer: {(report.LowerCase ? "lower-cased" : "cased")} (from {report.CasingSource})");
        return 0;
    }
}
