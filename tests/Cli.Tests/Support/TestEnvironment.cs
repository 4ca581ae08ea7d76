using System.Text.Json;
using AttributionFleet.Engine.Text;
using AttributionFleet.Engine.Training;
using static TorchSharp.torch;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Tests.Support;

/// <summary>
/// Points the CLI's cache (<c>ATTRIBUTIONFLEET_CACHE</c>) at a folder of this test process, so the encoder import and the
/// default model folder are built fresh once per run and never touch the user's cache; deleted on exit. Also holds
/// what several tests share: the repository paths, the loaded encoder and the test set's embeddings.
/// </summary>
public static class TestEnvironment
{
    /// <summary>Serialises forward passes of the shared encoder (the tests run in parallel).</summary>
    public static readonly object EncoderGate = new();

    private static readonly Lazy<string> Cache = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), $"attributionfleet-cli-tests-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        Environment.SetEnvironmentVariable("ATTRIBUTIONFLEET_CACHE", dir);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(dir, recursive: true); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        };
        return dir;
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly Lazy<LoadedModel> EncoderModel = new(() =>
    {
        Init();
        return LoadedModel.Load(MiniLmAssets.EnsureImported(), CPU);
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly Lazy<(List<LabeledText> Rows, float[][] Embeddings)> TestSet = new(() =>
    {
        var rows = HeadTrainer.ReadJsonl(Path.Combine(DataDir, "test.jsonl"));
        float[][] x;
        lock (EncoderGate) x = HeadTrainer.Embed(Encoder, rows.Select(r => r.Text).ToList());
        return (rows, x);
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Call first in every test that touches the cache.</summary>
    public static string Init() => Cache.Value;

    public static string RepoRoot { get; } = FindRoot();

    public static string DataDir => Path.Combine(RepoRoot, "data", "sentiment");

    public static string HeadDir => Path.Combine(RepoRoot, "models", DefaultModel.Id);

    /// <summary>The bare MiniLM encoder (mean pooling, no head), loaded once.</summary>
    public static LoadedModel Encoder => EncoderModel.Value;

    /// <summary>data/sentiment/test.jsonl and its mean-pooled embeddings, computed once per run.</summary>
    public static (List<LabeledText> Rows, float[][] Embeddings) Test => TestSet.Value;

    /// <summary>Runs a command in-process and returns its exit code and stdout.</summary>
    public static (int Code, string Stdout) Run(Func<string[], TextWriter, int> command, params string[] args)
    {
        Init();
        var stdout = new StringWriter();
        int code = command(args, stdout);
        return (code, stdout.ToString());
    }

    /// <summary>The JSON lines a --json command printed.</summary>
    public static List<JsonElement> JsonLines(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => { using var d = JsonDocument.Parse(l); return d.RootElement.Clone(); }).ToList();

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "AttributionFleet.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("AttributionFleet.sln not found above " + AppContext.BaseDirectory);
    }
}
