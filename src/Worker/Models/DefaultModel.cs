using System.Text.Json;
using System.Text.Json.Nodes;
using AttributionFleet.Engine;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Training;
using static TorchSharp.torch;

namespace AttributionFleet.Worker.Models;

/// <summary>
/// The embedded default model <c>sentiment-minilm</c>: the pretrained MiniLM encoder (<see cref="MiniLmAssets"/>) with its
/// top layers fine-tuned, mean pooling and a linear head, all from the small delta that <c>fleet train-default</c> trained
/// (models/sentiment-minilm/delta.safetensors, copied next to the executable; see <see cref="EncoderDelta"/>). A folder
/// with only a head (head.safetensors from <c>fleet train-head</c>, on the frozen encoder) is still accepted.
/// <see cref="EnsureFolder"/> assembles a complete model folder once, in the cache next to the encoder, and rebuilds it
/// whenever the delta (or head) changes.
/// </summary>
public static class DefaultModel
{
    public const string Id = "sentiment-minilm";

    /// <summary>Written last into the folder: the SHA-256 of the delta (or head) files it was built from.</summary>
    public const string StampFile = "head.sha256";

    private const int FormatVersion = 2;

    /// <summary>
    /// The README's examples and the label the default model must give each (tests and <c>fleet train-default</c> check
    /// them; none of them is in the training data).
    /// </summary>
    public static readonly IReadOnlyList<(string Text, string Label)> Examples = new[]
    {
        ("The plot was dull but the acting was wonderful.", "positive"),
        ("I would not recommend this place to anyone.", "negative"),
        ("Fast delivery and the battery lasts for days.", "positive"),
        ("Good", "positive"),
        ("Bad", "negative"),
    };
    private static readonly object Gate = new();

    /// <summary>Where the assembled model folder lives: <c>CacheRoot/sentiment-minilm</c>.</summary>
    public static string Folder => Path.Combine(MiniLmAssets.CacheRoot, Id);

    /// <summary>
    /// The folder with delta.safetensors and delta.json (or head.safetensors and head.json): <c>models/sentiment-minilm</c>
    /// next to the executable (the build copies it there), else in the repository above the current directory or the
    /// executable.
    /// </summary>
    public static string HeadDir
    {
        get
        {
            var relative = Path.Combine("models", Id);
            var besideExe = Path.Combine(AppContext.BaseDirectory, relative);
            if (HasWeights(besideExe)) return besideExe;
            var inRepo = FindInRepo(relative);
            if (inRepo is not null && HasWeights(inRepo)) return inRepo;
            throw new ModelLoadException(
                $"The default model's delta ({relative}/{EncoderDelta.WeightsFile}) is neither next to the executable ({AppContext.BaseDirectory}) nor in a repository above it; run `fleet train-default` or give --model DIR",
                besideExe);
        }
    }

    private static bool HasWeights(string dir) =>
        File.Exists(Path.Combine(dir, EncoderDelta.WeightsFile)) || File.Exists(Path.Combine(dir, HeadTrainer.WeightsFile));

    /// <summary>True when <paramref name="headDir"/> holds a fine-tuning delta; refuses a folder with both a delta and a head.</summary>
    private static bool HasDelta(string headDir)
    {
        bool delta = File.Exists(Path.Combine(headDir, EncoderDelta.WeightsFile));
        if (delta && File.Exists(Path.Combine(headDir, HeadTrainer.WeightsFile)))
            throw new ModelLoadException(
                $"{headDir} holds both {EncoderDelta.WeightsFile} (fleet train-default) and {HeadTrainer.WeightsFile} (fleet train-head); remove the one that is not meant to be the default model",
                Path.Combine(headDir, HeadTrainer.WeightsFile));
        return delta;
    }

    /// <summary>True when <paramref name="model"/> names the default model (no --model, or --model sentiment-minilm).</summary>
    public static bool IsDefault(string? model) => model is null || (model == Id && !Directory.Exists(model));

    /// <summary>
    /// Returns a model folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json) for the default model,
    /// building it first when it is missing or was built from another head. Safe across threads and processes: the
    /// folder is assembled in a staging folder of this process and moved into place.
    /// </summary>
    public static string EnsureFolder()
    {
        lock (Gate)
        {
            var headDir = HeadDir;
            var stamp = Stamp(headDir);
            var dir = Folder;
            if (IsCurrent(dir, stamp)) return dir;
            var encoderDir = MiniLmAssets.EnsureImported();
            var staging = dir + ".staging-" + Environment.ProcessId;
            if (Directory.Exists(staging)) Directory.Delete(staging, true);
            Build(encoderDir, headDir, staging);
            File.WriteAllText(Path.Combine(staging, StampFile), stamp);
            try
            {
                if (Directory.Exists(dir)) Directory.Delete(dir, true);
                Directory.Move(staging, dir);
            }
            catch (IOException) when (IsCurrent(dir, stamp))
            {
                Directory.Delete(staging, true); // another process finished the same folder first
            }
            return dir;
        }
    }

    /// <summary>
    /// Assembles the model folder in <paramref name="target"/> from an imported encoder folder and a delta (or head)
    /// folder: the delta merged into the encoder's weights gives a plain MeanPoolingClassifier checkpoint.
    /// </summary>
    public static void Build(string encoderDir, string headDir, string target)
    {
        Directory.CreateDirectory(target);
        if (HasDelta(headDir))
        {
            using var scope = NewDisposeScope();
            using var delta = EncoderDelta.Load(headDir);
            delta.CheckBase(Path.Combine(encoderDir, ModelLoader.WeightsFile), Path.Combine(headDir, EncoderDelta.WeightsFile));
            WriteConfig(encoderDir, delta.Labels, target);
            var encoder = ModelLoader.Load(encoderDir, CPU);
            var model = delta.Apply(encoder);
            ModelLoader.SaveWeights(model, Path.Combine(target, ModelLoader.WeightsFile));
        }
        else
            BuildFromHead(encoderDir, headDir, target);
        foreach (var file in Directory.EnumerateFiles(encoderDir))
        {
            var name = Path.GetFileName(file);
            if (name is ModelLoader.ConfigFile or ModelLoader.WeightsFile) continue;
            File.Copy(file, Path.Combine(target, name), overwrite: true);
        }
    }

    private static void WriteConfig(string encoderDir, IReadOnlyList<string> labels, string target)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(encoderDir, ModelLoader.ConfigFile)))!.AsObject();
        config["architectures"] = new JsonArray("MeanPoolingClassifier");
        config["id2label"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(i.ToString(), (JsonNode?)JsonValue.Create(l))));
        config["label2id"] = new JsonObject(labels.Select((l, i) => KeyValuePair.Create(l, (JsonNode?)JsonValue.Create(i))));
        config["attributionfleet_model"] = Id;
        File.WriteAllText(Path.Combine(target, ModelLoader.ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>The frozen encoder with the linear head of <c>fleet train-head</c>.</summary>
    private static void BuildFromHead(string encoderDir, string headDir, string target)
    {
        var head = HeadTrainer.Load(headDir);
        WriteConfig(encoderDir, head.Labels, target);
        using (var scope = NewDisposeScope())
        {
            var encoder = ModelLoader.Load(encoderDir, CPU);
            if (encoder.HasClassifier || encoder.Config.HiddenSize != head.Hidden)
                throw new ModelLoadException($"The head in {headDir} ({head.Classes}×{head.Hidden}) does not fit the encoder in {encoderDir} (hidden {encoder.Config.HiddenSize})", headDir);
            var weight = tensor(head.Weight.SelectMany(r => r).ToArray(), dtype: ScalarType.Float32).reshape(head.Classes, head.Hidden);
            var bias = tensor(head.Bias, dtype: ScalarType.Float32);
            var model = encoder.WithClassifier(weight, bias, head.Labels);
            ModelLoader.SaveWeights(model, Path.Combine(target, ModelLoader.WeightsFile));
        }
    }

    /// <summary>What the folder is built from: the delta's (or head's) two files, by SHA-256.</summary>
    private static string Stamp(string headDir)
    {
        var (weights, info) = HasDelta(headDir) ? (EncoderDelta.WeightsFile, EncoderDelta.InfoFile) : (HeadTrainer.WeightsFile, HeadTrainer.InfoFile);
        return $"v{FormatVersion} {weights} {HeadTrainer.Sha256(Path.Combine(headDir, weights))} {HeadTrainer.Sha256(Path.Combine(headDir, info))}";
    }

    private static bool IsCurrent(string dir, string stamp)
    {
        var path = Path.Combine(dir, StampFile);
        return File.Exists(path) && File.ReadAllText(path) == stamp
            && File.Exists(Path.Combine(dir, ModelLoader.WeightsFile)) && File.Exists(Path.Combine(dir, ModelLoader.ConfigFile));
    }

    /// <summary>
    /// <paramref name="relative"/> under the current directory if it exists there, else under the repository root (the
    /// first folder holding AttributionFleet.sln above the current directory or the executable); null if neither has it.
    /// </summary>
    public static string? FindInRepo(string relative)
    {
        var here = Path.GetFullPath(relative);
        if (Directory.Exists(here) || File.Exists(here)) return here;
        var root = RepoRoot();
        if (root is null) return null;
        var candidate = Path.Combine(root, relative);
        return Directory.Exists(candidate) || File.Exists(candidate) ? candidate : null;
    }

    /// <summary>The first folder holding AttributionFleet.sln above the current directory, else above the executable.</summary>
    public static string? RepoRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "AttributionFleet.sln"))) return dir.FullName;
        }
        return null;
    }
}
