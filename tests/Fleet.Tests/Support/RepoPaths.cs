namespace AttributionFleet.Fleet.Tests.Support;

public static class RepoPaths
{
    private static readonly Lazy<string> RootDir = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "AttributionFleet.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("AttributionFleet.sln not found above " + AppContext.BaseDirectory);
    });

    public static string Root => RootDir.Value;

    public static string Path(params string[] parts) => System.IO.Path.Combine(new[] { Root }.Concat(parts).ToArray());
}
