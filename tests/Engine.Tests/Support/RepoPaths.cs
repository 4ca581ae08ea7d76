using System.Text.Json;

namespace AttributionFleet.Engine.Tests.Support;

/// <summary>Locates the repository root and the reference cases inside it (tests/fixtures/reference, see its README).</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string SharedReference { get; } = Path.Combine(Root, "tests", "fixtures", "reference");

    public static string Reference(string name) => Path.Combine(SharedReference, name);

    public static JsonElement LoadCase(string folder)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Reference(folder), "case.json")));
        return doc.RootElement.Clone();
    }

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "AttributionFleet.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("AttributionFleet.sln not found above " + AppContext.BaseDirectory);
    }
}

public static class Json
{
    public static long[,] Long2(JsonElement e)
    {
        int n = e.GetArrayLength(), m = e[0].GetArrayLength();
        var a = new long[n, m];
        for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) a[i, j] = e[i][j].GetInt64();
        return a;
    }

    public static double[,] Double2(JsonElement e)
    {
        int n = e.GetArrayLength(), m = e[0].GetArrayLength();
        var a = new double[n, m];
        for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) a[i, j] = e[i][j].GetDouble();
        return a;
    }

    public static double[] Double1(JsonElement e) => e.EnumerateArray().Select(x => x.GetDouble()).ToArray();
}
